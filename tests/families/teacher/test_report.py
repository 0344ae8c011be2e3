"""The verdict says plainly which baselines the LSNN beats."""

import torch

from es_l2l.families.teacher.evaluate import episode_metrics
from es_l2l.families.teacher.report import LSNN_TRAINED, LSNN_UNTRAINED, HeldOutReport, verdict


def report_with(lsnn: list[float]) -> HeldOutReport:
    curves = {
        LSNN_TRAINED: torch.tensor(lsnn),
        LSNN_UNTRAINED: torch.full((6,), 0.4),
        "family mean": torch.full((6,), 0.35),
        "running mean": torch.tensor([0.35, 0.2, 0.12, 0.1, 0.09, 0.09]),
        "oracle linear": torch.full((6,), 0.01),
    }
    return HeldOutReport(curves, {k: episode_metrics(c, "test") for k, c in curves.items()}, 0.2, 0.9, 8)


def test_offset_tracker_verdict():
    r = report_with([0.35, 0.3, 0.2, 0.15, 0.14, 0.13])
    assert r.beaten() == {LSNN_UNTRAINED: True, "family mean": True, "running mean": False, "oracle linear": False}
    text = verdict(r)
    assert "beats: LSNN generation 0, family mean; it does not beat: running mean, oracle linear." in text
    assert "tracks each task's offset" in text and "falls within an episode" in text


def test_verdict_when_even_the_family_mean_wins():
    text = verdict(report_with([0.38] * 6))
    assert "has not learned even each task's offset" in text and "does not fall within an episode" in text


def test_verdict_when_the_running_mean_is_beaten():
    r = report_with([0.3, 0.1, 0.05, 0.04, 0.03, 0.03])
    assert r.beaten()["running mean"] and "learns more of each function than its offset" in verdict(r)
    assert r.to_csv().splitlines()[0] == "trial,LSNN meta-trained,LSNN generation 0,family mean,running mean,oracle linear"


def test_verdict_carries_the_paired_interval():
    from es_l2l.families.teacher.report import late_per_episode, paired_sentence

    r = report_with([0.3, 0.1, 0.05, 0.04, 0.03, 0.03])
    r.paired = {"mean": -0.02, "lo": -0.03, "hi": -0.01, "n": 128.0}
    assert "-0.0200 (95% CI -0.0300 to -0.0100, 128 episodes): below the running mean, outside the 95% CI" in verdict(r)
    assert "not distinguishable" in paired_sentence({"mean": 0.0, "lo": -0.01, "hi": 0.01, "n": 9.0})
    assert "above the running mean" in paired_sentence({"mean": 0.02, "lo": 0.01, "hi": 0.03, "n": 9.0})
    assert r.test_metrics()["withheld/model_minus_running_mean/hi"] == -0.01
    # second half of each episode: trials 2 and 3 of 4
    pred, y = torch.tensor([[0.0, 0.0, 1.0, 3.0]]), torch.zeros(1, 4)
    assert late_per_episode(pred, y).tolist() == [5.0]


def test_the_report_names_the_model_kind_it_trained():
    from es_l2l.config import build_config
    from es_l2l.families.teacher.evaluate import model_name
    from es_l2l.families.teacher.report import paired_sentence

    base = {"name": "t", "outer": "bptt"}
    from es_l2l.context import RunContext

    def named(model):
        return model_name(RunContext.of(build_config({**base, "model": model})))

    assert named({"kind": "lstm", "lstm_units": 4}) == "LSTM"
    assert named({"n_lif": 8, "n_alif": 0}) == "LIF network"
    assert named({"n_lif": 8, "n_alif": 4}) == "LSNN"
    r = report_with([0.35, 0.3, 0.2, 0.15, 0.14, 0.13])
    r.model = "LSTM"
    r.paired = {"mean": -0.02, "lo": -0.03, "hi": -0.01, "n": 128.0}
    text = verdict(r)
    assert "the meta-trained LSTM beats: LSTM generation 0, family mean; it does not beat: running mean" in text
    assert "LSTM minus running mean: -0.0200" in text and "LSNN" not in text
    assert r.to_csv().splitlines()[0] == "trial,LSTM meta-trained,LSTM generation 0,family mean,running mean,oracle linear"
    # the metric keys stay the kind-free ones (withheld/model/... in MLflow), whatever the label
    assert "withheld/model/mse_late" in r.test_metrics()
    assert paired_sentence(r.paired).startswith("Per-episode MSE over the second half, LSNN minus")
