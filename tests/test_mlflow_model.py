"""What a run leaves in MLflow for its users: the description, the held-out table, the model."""

import mlflow.pyfunc
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from es_l2l.tracking.checkpoint import load_checkpoint
from es_l2l.context import RunContext
from es_l2l.snn import rollout
from tests.test_cli import es_l2l, store


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    from tests.test_cli import SMOKE

    proc = es_l2l(tmp, "run", str(SMOKE), *store(tmp), "--workers", "0", "--set", "run.generations=2", "--set", "run.validate_every=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for noise in ("type hints", "model signature"):  # logging the model prints nothing of MLflow's own
        assert noise not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    (r,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return tmp, client, r


def test_description_and_table_say_what_happened(run, monkeypatch):
    tmp, client, r = run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")  # load_table downloads through the default store
    note = r.data.tags["mlflow.note.content"]
    assert "| predictor |" in note and "LSNN meta-trained" in note and "running mean" in note
    assert "held_out.json" in r.data.tags.get("mlflow.loggedArtifacts", ""), r.data.tags
    table = client.load_table(r.info.experiment_id, "held_out.json", run_ids=[r.info.run_id])
    row = table[table["predictor"] == "LSNN meta-trained"].iloc[0]
    assert row["test_mse_late"] == pytest.approx(r.data.metrics["withheld/model/mse_late"])


def test_the_trained_network_loads_as_a_pyfunc_model_and_evaluate_takes_run_uris(run, monkeypatch):
    tmp, client, r = run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{r.info.run_id}/model")
    cfg, genome, genomes, _ = load_checkpoint(client.download_artifacts(r.info.run_id, "checkpoint.pt", str(tmp)))
    x = (torch.rand(3, 40, genome.n_in, generator=torch.Generator().manual_seed(0)) < 0.05).float()
    out = model.predict(x.numpy())
    with torch.no_grad():
        ref = rollout(genome.params(genomes["best"].unsqueeze(0)), x, RunContext.of(cfg).sim).y[0].numpy()
    assert out.shape == (3, 40, 1) and np.allclose(out, ref)
    with pytest.raises(ValueError, match="episodes must be"):
        model.predict(np.zeros((2, 5, genome.n_in + 1)))
    proc = es_l2l(tmp, "evaluate", f"runs:/{r.info.run_id}", "--tasks", "8")
    assert proc.returncode == 0, proc.stderr
    assert "test MSE over late trials" in proc.stdout
