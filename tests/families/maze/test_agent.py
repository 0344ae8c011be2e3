"""The LSNN maze agent: hand-made policies, batched == loop over members, sampling, A2C returns."""

import math

import pytest
import torch

from es_l2l.families.maze.agent import N_OUT, choose, play, policy
from es_l2l.config import build_config
from es_l2l.context import RunContext
from es_l2l.families.maze.config import MazeConfig
from es_l2l.fitness import evaluate
from es_l2l.families.maze.evaluate import maze_batch, maze_eval
from es_l2l.genome import build_genome
from es_l2l.families.maze.a2c import discounted_returns
from es_l2l.seeds import SeedKey
from es_l2l.snn import LSNNParams
from es_l2l.families.maze import env as maze
from es_l2l.families.maze.env import DOWN, LEFT, RIGHT, UP, Mazes

CFG = build_config({"model": {"n_lif": 4, "n_alif": 4}, "task": {"family": "maze", "n_steps": 12, "ms_per_step": 3}})
TASK: MazeConfig = CFG.task
CTX = RunContext.of(CFG)


def biased(pop: int, action_logits: torch.Tensor, n: int = 8) -> LSNNParams:
    """Networks whose readout ignores the spikes: constant logits per member (pop, 4)."""
    n_in = maze.n_inputs(TASK)
    g = torch.Generator().manual_seed(0)
    return LSNNParams(
        w_in=torch.randn(pop, n_in, n, generator=g),
        w_rec=torch.zeros(pop, n, n),
        w_out=torch.zeros(pop, n, N_OUT),
        b_out=torch.cat([action_logits, torch.zeros(pop, 1)], dim=1),
        alpha=torch.full((pop, n), math.exp(-1 / 20)),
        rho=torch.full((pop, n), math.exp(-1 / 600)),
        b0=torch.full((pop, n), 0.01),
        beta=torch.full((pop, n), 1.7),
        kappa=torch.full((pop, 1), math.exp(-1 / 20)),
    )


def test_constant_policy_walks_to_the_wall_and_earns_the_hand_computed_reward():
    # Start in cell 6 (row 1, col 1), goal 4 (top right). Always RIGHT: 7, 8, 9, then bumps at 9.
    mazes = Mazes(goal=torch.tensor([4, 19]), start=torch.tensor([6, 10]), respawn=torch.full((2, TASK.n_steps), 9))
    logits = torch.tensor([[0.0, 0.0, 0.0, 50.0]])
    ep = play(TASK, CTX, biased(1, logits), mazes, torch.Generator().manual_seed(1), greedy=False)
    assert ep.action.eq(RIGHT).all()
    assert ep.pos[0, 0].tolist() == [6, 7, 8] + [9] * 9
    assert ep.pos[0, 1].tolist() == [10, 11, 12, 13] + [14] * 8
    assert torch.allclose(ep.total_reward(), torch.full((1, 2), -0.1 * TASK.n_steps))
    assert not ep.reached.any()
    # Always UP from 9: 4 is the goal after one move, then respawn at 9 again: a goal every move.
    mazes = Mazes(goal=torch.tensor([4]), start=torch.tensor([9]), respawn=torch.full((1, TASK.n_steps), 9))
    ep = play(TASK, CTX, biased(1, torch.tensor([[50.0, 0, 0, 0]])), mazes, torch.Generator().manual_seed(1), greedy=True)
    assert ep.reached.all() and torch.allclose(ep.total_reward(), torch.tensor([[float(TASK.n_steps)]]))
    assert ep.value.eq(0).all() and ep.entropy.max() < 1e-6


def test_sampling_inverts_the_policy_cdf_at_the_shared_uniforms():
    logp = torch.log(torch.tensor([[[0.1, 0.2, 0.3, 0.4]] * 4]))  # (P=1, B=4, 4)
    u = torch.tensor([0.05, 0.15, 0.35, 0.99])
    assert choose(logp, u, greedy=False).tolist() == [[UP, DOWN, LEFT, RIGHT]]
    assert choose(logp, u, greedy=True).tolist() == [[RIGHT] * 4]


def test_temperature_sharpens_the_policy_without_changing_its_order():
    out = torch.tensor([[1.0, 2.0, 0.5, -1.0, 0.75]])
    logp, value = policy(out)
    assert torch.allclose(logp, torch.log_softmax(out[:, :4], -1)) and value.item() == 0.75
    cold, _ = policy(out, temperature=0.25)
    assert torch.allclose(cold, torch.log_softmax(4 * out[:, :4], -1))
    assert cold.argmax(-1).item() == logp.argmax(-1).item() == DOWN
    assert cold.exp()[0, DOWN] > 0.97 > logp.exp()[0, DOWN]
    # Played: a member whose readout prefers RIGHT 2:1 on every move samples it far more often when cold.
    mazes = Mazes(goal=torch.tensor([4] * 8), start=torch.tensor([10] * 8), respawn=torch.full((8, TASK.n_steps), 9))
    logits = torch.log(torch.tensor([[1.0, 1.0, 1.0, 2.0]]))
    warm = play(TASK, CTX, biased(1, logits), mazes, torch.Generator().manual_seed(3))
    cold_task = TASK.model_copy(update={"temperature": 0.1})
    cold_ep = play(cold_task, CTX, biased(1, logits), mazes, torch.Generator().manual_seed(3))
    assert cold_ep.action.eq(RIGHT).float().mean() > 0.99 > 0.6 > warm.action.eq(RIGHT).float().mean()


@pytest.mark.parametrize("greedy", [False, True])
def test_batched_population_equals_a_loop_over_members(greedy):
    genome = build_genome(CFG)
    g = torch.Generator().manual_seed(3)
    vectors = genome.initial_vector() + 0.5 * torch.randn(3, genome.dim, generator=g)
    params = genome.params(vectors)
    mazes, _ = maze_batch(TASK, (0, 11), 5)
    batched = play(TASK, CTX, params, mazes, maze_batch(TASK, (0, 11), 5)[1], greedy=greedy)
    for p in range(3):
        member = LSNNParams(*[t[p : p + 1] for t in params])
        single = play(TASK, CTX, member, mazes, maze_batch(TASK, (0, 11), 5)[1], greedy=greedy)
        for name in ("pos", "action", "reward", "reached"):
            assert torch.equal(getattr(single, name)[0], getattr(batched, name)[p]), name
        assert torch.equal(single.spike_count[0], batched.spike_count[p])
        assert torch.allclose(single.logp[0], batched.logp[p], atol=1e-5)
    # The members differ (else the test would prove nothing).
    assert not torch.equal(batched.action[0], batched.action[1])


def test_fitness_is_mean_total_reward_and_a_pure_function_of_the_seed():
    genome = build_genome(CFG)
    vectors = genome.initial_vector().repeat(2, 1)
    vectors[1] += 0.3
    a = evaluate(CFG, genome, vectors, (0, 2, 7))
    b = evaluate(CFG, genome, vectors[1:], (0, 2, 7))
    assert torch.equal(a.fitness[1:], b.fitness)  # the same member scores the same in any population
    params = genome.params(vectors)
    mazes, gen = maze_batch(TASK, (0, 2, 7), TASK.batch_size)
    ep = play(TASK, CTX, params, mazes, gen, greedy=False)
    assert torch.allclose(a.reward, ep.total_reward().mean(1))
    assert a.neuron_steps == 2 * TASK.batch_size * 8 * TASK.n_steps * TASK.ms_per_step
    assert torch.equal(maze_eval(CTX, ep).fitness, a.fitness)


def test_discounted_returns_by_hand():
    r = torch.tensor([[-0.1, -0.1, 1.0, -0.1]])
    expected = [-0.1 + 0.5 * (-0.1 + 0.5 * (1.0 + 0.5 * -0.1)), -0.1 + 0.5 * (1.0 + 0.5 * -0.1), 1.0 - 0.05, -0.1]
    assert torch.allclose(discounted_returns(r, 0.5), torch.tensor([expected]))


def test_policy_gradient_reaches_the_readout_and_the_recurrent_weights():
    from es_l2l.families.maze.a2c import a2c_loss

    cfg = build_config(CFG.model_dump(), ["task.a2c.entropy_weight=0.1"])
    genome = build_genome(cfg)
    genes = genome.decode(genome.initial_vector().unsqueeze(0))
    for name in ("w_rec", "w_out"):
        genes[name] = genes[name].clone().requires_grad_(True)
    loss, ev, terms = a2c_loss(cfg.task, RunContext.of(cfg).with_backend(cfg.bptt.backend), genome.to_model(genes), SeedKey(0, 2, 1), 4)
    loss.backward()
    assert genes["w_out"].grad.abs().sum() > 0 and genes["w_rec"].grad.abs().sum() > 0
    assert set(terms) == {"policy_loss", "value_loss", "entropy"} and 0 < terms["entropy"] <= math.log(4) + 1e-6
    assert ev.reward.shape == (1,)


@pytest.mark.parametrize("greedy", [True, False])
def test_the_kernel_closed_loop_plays_the_same_episode_as_the_differentiable_step_loop(greedy):
    """Without gradients ``play`` advances the C kernel a few ms per move; with them, the graph
    step loop runs. Same mazes and draws: same moves, rewards and spikes."""
    from es_l2l.snn import kernel

    if kernel.load() is None:
        pytest.skip(str(kernel.why_not()))
    cfg = build_config({"model": {"n_lif": 12, "n_alif": 12}, "task": {"family": "maze", "n_steps": 30, "ms_per_step": 4}})
    genome = build_genome(cfg)
    g = torch.Generator().manual_seed(2)
    vectors = genome.initial_vector() + 0.3 * torch.randn(3, genome.dim, generator=g)
    params = genome.params(vectors)
    mazes, _ = maze_batch(cfg.task, (0, 9, 1), 6)
    with torch.no_grad():
        fast = play(cfg.task, RunContext.of(cfg), params, mazes, torch.Generator().manual_seed(5), greedy=greedy, record_spikes=True)
    leaves = LSNNParams(*[t.clone().requires_grad_(True) for t in params])
    graph = play(cfg.task, RunContext.of(cfg), leaves, mazes, torch.Generator().manual_seed(5), greedy=greedy, record_spikes=True)
    assert graph.logp.requires_grad and not fast.logp.requires_grad
    assert fast.spikes.sum() > 0
    for name in ("pos", "action", "reward", "reached", "spike_count", "spikes"):
        assert torch.equal(getattr(fast, name), getattr(graph, name).detach()), name
    torch.testing.assert_close(fast.logp, graph.logp.detach(), rtol=1e-5, atol=1e-5)


def test_a2c_replay_through_the_fused_backward_equals_the_closed_loop_graph():
    """The episode played on the kernel and replayed through the fused backward gives the closed
    loop's log-probabilities, values and gradients (autograd through every step of the loop)."""
    from es_l2l.families.maze.a2c import a2c_loss

    grads, evals = {}, {}
    for backend in ("kernel", "autograd"):
        cfg = build_config(CFG.model_dump(), [f"bptt.backend={backend}", "task.a2c.entropy_weight=0.1"])
        genome = build_genome(cfg)
        genes = genome.decode(genome.initial_vector().unsqueeze(0))
        for name in ("w_in", "w_rec", "w_out", "b_out"):
            genes[name] = genes[name].clone().requires_grad_(True)
        loss, ev, terms = a2c_loss(cfg.task, RunContext.of(cfg).with_backend(cfg.bptt.backend), genome.to_model(genes), SeedKey(0, 2, 1), 4)
        loss.backward()
        grads[backend] = {n: genes[n].grad for n in ("w_in", "w_rec", "w_out", "b_out")}
        evals[backend] = (loss.item(), ev.reward, terms)
    assert torch.equal(evals["kernel"][1], evals["autograd"][1])  # the same actions and rewards
    assert abs(evals["kernel"][0] - evals["autograd"][0]) < 1e-5
    for name in grads["kernel"]:
        torch.testing.assert_close(grads["kernel"][name], grads["autograd"][name], rtol=1e-4, atol=1e-6)
