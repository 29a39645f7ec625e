"""Blind reference answerers."""

from posttrain.eval.baselines import question_prior


def test_question_prior_answers_from_the_question_alone():
    known = [{"id": "k1", "question": "Modality?", "answer": "CT"}, {"id": "k2", "question": "Modality?", "answer": "CT"},
             {"id": "k3", "question": "Modality?", "answer": "MRI"},
             {"id": "k4", "question": "Which?", "answer": "B", "choices": ["MRI", "CT", "X-ray"]},
             {"id": "k5", "question": "Which?", "answer": "C", "choices": ["X-ray", "MRI", "CT"]},
             {"id": "k6", "question": "Count?", "answer": "B", "choices": ["0", "1"]}]
    refs = [{"id": "t1", "question": "Modality?", "answer": "MRI"},
            {"id": "t2", "question": "Never seen?", "answer": "x"},
            {"id": "t3", "question": "Which?", "answer": "A", "choices": ["CT", "MRI", "X-ray"]},
            {"id": "t4", "question": "Which?", "answer": "A", "choices": ["MRI", "X-ray", "PET"]}]
    preds = {p["id"]: p["prediction"] for p in question_prior(known, refs)}
    assert preds == {"t1": "CT", "t2": "", "t3": "A", "t4": "B"}  # t4: CT is no option -> the commonest letter
