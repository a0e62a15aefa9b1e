"""Records as tidy tables (tdlib.paper.tables)."""

import math

from tdlib.paper.tables import by_task, fidelity_columns, glue_scores


def record() -> dict:
    student = {"metrics": {"score": 0.5, "mcc": 0.5}, "fidelity": {"agreement": 0.9, "soft_ce": 0.3},
               "logit_std": 1.5, "range": {"score": [0.4, 0.6]}}
    regression = {"metrics": {"score": 0.8, "pearson": 0.8}, "fidelity": {"mse_to_teacher": 0.1}, "logit_std": 0.7}
    return {"students": {"IV-8-16": {"kind": "tucker"}, "dense-1L-16-70": {"kind": "baseline"}},
            "tasks": {"cola": {"metrics": {"score": 0.6, "mcc": 0.6}, "majority": {"score": 0.0, "mcc": 0.0},
                               "n_train": 10, "n_dev": 5,
                               "students": {"IV-8-16": student, "dense-1L-16-70": {**student, "range": {}}}},
                      "stsb": {"metrics": {"score": 0.9, "pearson": 0.9}, "majority": {"score": 0.0, "pearson": 0.0},
                               "n_train": 8, "n_dev": 4,
                               "students": {"IV-8-16": regression, "dense-1L-16-70": regression}}}}


def test_one_row_per_task_and_model_in_the_records_order():
    scores = glue_scores(record())
    assert list(scores["model"][:4]) == ["teacher", "IV-8-16", "dense-1L-16-70", "majority class"]
    assert list(scores["kind"][:4]) == ["teacher", "tucker", "baseline", "majority"]
    iv = scores[(scores["task"] == "cola") & (scores["model"] == "IV-8-16")].iloc[0]
    assert iv["score"] == 0.5 and iv["agreement"] == 0.9 and iv["logit std"] == 1.5
    assert (iv["score lo"], iv["score hi"]) == (0.4, 0.6)
    assert fidelity_columns(scores) == ["agreement", "soft_ce", "logit std", "mse_to_teacher"]
    assert math.isnan(scores[(scores["task"] == "stsb") & (scores["model"] == "IV-8-16")].iloc[0]["agreement"])


def test_by_task_keeps_the_records_order_of_tasks_and_models():
    wide = by_task(glue_scores(record()))
    assert list(wide.index) == ["cola", "stsb"]
    assert list(wide.columns) == ["teacher", "IV-8-16", "dense-1L-16-70", "majority class"]
    assert wide.loc["stsb", "IV-8-16"] == 0.8 and wide.loc["cola", "majority class"] == 0.0
    assert list(by_task(glue_scores(record()), "mcc").loc["cola"]) == [0.6, 0.5, 0.5, 0.0]
