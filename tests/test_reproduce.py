import pytest

from tdlib.errors import ConfigError
from tdlib.reproduce import check_parameters, load_profile, notebook_path


def test_profiles_name_existing_notebooks_with_valid_parameters():
    for profile in ("cpu", "smoke", "paper"):
        for name, params in load_profile(profile).items():
            check_parameters(notebook_path(name), params)


def test_unknown_parameter_fails_with_the_list_of_known_ones():
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['rank'\]; its parameters are \["):
        check_parameters(notebook_path("04_speed"), {"rank": 3})


def test_ill_typed_parameter_fails():
    with pytest.raises(ConfigError, match="parameter threads must be int, got str '2'"):
        check_parameters(notebook_path("04_speed"), {"threads": "2"})
    with pytest.raises(ConfigError, match="parameter peers must be bool"):
        check_parameters(notebook_path("04_speed"), {"peers": 1})


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile 'gpu'"):
        load_profile("gpu")
