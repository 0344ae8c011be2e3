"""Maze family: rules on hand-made cases, batch layout, input encoding, and the baselines."""

import pytest
import torch

from es_l2l.families.maze.config import MazeConfig
from es_l2l.families.maze import env as maze
from es_l2l.seeds import generator
from es_l2l.families.maze.env import DOWN, LEFT, RIGHT, UP, Mazes
from es_l2l.families.maze.baselines import (
    exploit_statistic,
    explorer_policy,
    oracle_policy,
    play_baselines,
    rollout,
)

CFG = MazeConfig()  # 4 rows x 5 columns, 100 steps; corners 0, 4, 15, 19


def mazes_of(goal, start, respawn=(), n_steps=CFG.n_steps):
    """Hand-made mazes; respawn cells beyond those given are 9 (the centre-ish, never a corner)."""
    goal, start = torch.as_tensor(goal), torch.as_tensor(start)
    seq = torch.full(goal.shape + (n_steps,), 9)
    seq[..., : len(respawn)] = torch.as_tensor(respawn)
    return Mazes(goal=goal, start=start, respawn=seq)


def test_corners_and_input_count():
    assert maze.corners(CFG).tolist() == [0, 4, 15, 19]
    assert maze.n_inputs(CFG) == (20 + 4 + 3) * CFG.neurons_per_channel


def test_borders_at_every_edge_and_corner():
    # (cell, action, expected cell) for the four corners and a cell on each edge.
    cases = [
        (0, UP, 0), (0, LEFT, 0), (0, RIGHT, 1), (0, DOWN, 5),
        (4, UP, 4), (4, RIGHT, 4), (4, LEFT, 3), (4, DOWN, 9),
        (15, DOWN, 15), (15, LEFT, 15), (15, UP, 10), (15, RIGHT, 16),
        (19, DOWN, 19), (19, RIGHT, 19), (19, UP, 14), (19, LEFT, 18),
        (2, UP, 2), (10, LEFT, 10), (14, RIGHT, 14), (17, DOWN, 17), (7, DOWN, 12),
    ]  # fmt: skip
    pos, act, want = (torch.tensor(col) for col in zip(*cases))
    assert maze.move(CFG, pos, act).tolist() == want.tolist()
    # Exhaustively against plain clamping.
    cells = torch.arange(20).repeat_interleave(4)
    acts = torch.arange(4).repeat(20)
    expect = [
        min(max(c // 5 + (-1, 1, 0, 0)[a], 0), 3) * 5 + min(max(c % 5 + (0, 0, -1, 1)[a], 0), 4)
        for c, a in zip(cells.tolist(), acts.tolist())
    ]
    assert maze.move(CFG, cells, acts).tolist() == expect


def test_rewards_bumps_and_respawn_after_the_goal():
    # Goal at 19; start at 18. A bump (down at the bottom edge) costs -0.1 and stays in place;
    # the step into 19 gives +1 and respawns at the first pre-drawn cell (3), the goal unchanged.
    state = maze.reset(CFG, mazes_of(19, 18, respawn=[3, 11]))
    state, r, hit = maze.step(CFG, state, torch.tensor(DOWN))
    assert (state.pos.item(), r.item(), hit.item()) == (18, pytest.approx(-0.1), False)
    assert (state.prev_action.item(), state.prev_reward.item()) == (DOWN, pytest.approx(-0.1))
    state, r, hit = maze.step(CFG, state, torch.tensor(RIGHT))
    assert (state.pos.item(), r.item(), hit.item()) == (3, 1.0, True)
    assert (state.goal.item(), state.n_found.item(), state.t.item(), state.prev_reward.item()) == (19, 1, 2, 1.0)
    # An ordinary move costs -0.1 too.
    state, r, hit = maze.step(CFG, state, torch.tensor(LEFT))
    assert (state.pos.item(), r.item(), hit.item()) == (2, pytest.approx(-0.1), False)


def test_episode_ends_after_n_steps():
    cfg = MazeConfig(n_steps=3)
    state = maze.reset(cfg, mazes_of(0, 12, n_steps=3))
    rewards = []
    for _ in range(3):
        assert not maze.is_done(cfg, state)
        state, r, _ = maze.step(cfg, state, torch.tensor(RIGHT))
        rewards.append(r.item())
    assert maze.is_done(cfg, state) and state.t.item() == 3 and state.pos.item() == 14
    after, r, hit = maze.step(cfg, state, torch.tensor(LEFT))  # past the end: nothing happens
    assert (r.item(), hit.item(), after.pos.item(), after.t.item()) == (0.0, False, 14, 3)
    assert sum(rewards) == pytest.approx(-0.3)


def test_sampled_mazes_follow_the_rules_and_seeds():
    a = maze.sample_mazes(CFG, generator(5, 2, 0), 256)
    b = maze.sample_mazes(CFG, generator(5, 2, 0), 256)
    c = maze.sample_mazes(CFG, generator(5, 2, 1), 256)
    for x, y in zip(a[:3], b[:3]):
        assert torch.equal(x, y)
    assert a.next_goal is None  # the goal stays (the relocating curriculum is opt-in)
    assert not torch.equal(a.goal, c.goal)
    assert set(a.goal.tolist()) == {0, 4, 15, 19}
    assert (a.start != a.goal).all() and (a.respawn != a.goal[:, None]).all()
    assert set(a.respawn.flatten().tolist()) == set(range(20))  # other corners can be respawn cells
    # Every member of a population gets the same mazes.
    state = maze.reset(CFG, a, (3,))
    assert state.pos.shape == (3, 256) and torch.equal(state.goal[0], state.goal[2])
    assert torch.equal(state.pos[1], a.start) and torch.equal(state.respawn[2], a.respawn)


@pytest.mark.parametrize("relocate", [False, True])
def test_batched_environment_equals_a_loop_over_single_mazes(relocate):
    mazes = maze.sample_mazes(CFG, generator(11), 4, relocate=relocate)
    actions = torch.randint(4, (3, 4, CFG.n_steps), generator=generator(12))
    # A biased walk finds the goal often enough to exercise respawns.
    actions = torch.where(torch.rand(actions.shape, generator=generator(13)) < 0.5, DOWN, actions)
    state = maze.reset(CFG, mazes, (3,))
    batched = []
    for t in range(CFG.n_steps):
        state, r, hit = maze.step(CFG, state, actions[..., t])
        batched.append((state.pos, r, hit))
    assert state.n_found.sum() > 6
    for p in range(3):
        for b in range(4):
            single = maze.reset(CFG, Mazes(*(None if x is None else x[b] for x in mazes)))
            for t in range(CFG.n_steps):
                single, r, hit = maze.step(CFG, single, actions[p, b, t])
                pos_t, r_t, hit_t = batched[t]
                assert single.pos.item() == pos_t[p, b].item() and hit.item() == hit_t[p, b].item()
                assert torch.equal(r, r_t[p, b])
    if relocate:  # the goal did move
        assert (state.goal != mazes.goal).any()


def test_input_encoding_layout():
    k = CFG.neurons_per_channel
    p_on = CFG.rate_hz * 1e-3
    state = maze.reset(CFG, mazes_of([19, 19], [7, 7]))
    state, _, _ = maze.step(CFG, state, torch.tensor([LEFT, DOWN]))  # -> 6 and 12, reward -0.1
    prob = maze.input_probabilities(CFG, state)
    on = lambda ch: list(range(ch * k, (ch + 1) * k))  # noqa: E731
    assert (prob[0] > 0).nonzero().flatten().tolist() == on(6) + on(20 + LEFT) + on(24 + 1)
    assert (prob[1] > 0).nonzero().flatten().tolist() == on(12) + on(20 + DOWN) + on(24 + 1)
    assert prob.max().item() == pytest.approx(p_on)
    first = maze.input_probabilities(CFG, maze.reset(CFG, mazes_of(19, 18)))
    assert (first > 0).nonzero().flatten().tolist() == on(18) + on(24 + 2)  # no action, reward "none"
    after_goal, _, _ = maze.step(CFG, maze.reset(CFG, mazes_of(19, 18, respawn=[3])), torch.tensor(RIGHT))
    after = (maze.input_probabilities(CFG, after_goal) > 0).nonzero().flatten().tolist()
    assert after == on(3) + on(20 + RIGHT) + on(24)
    spikes = maze.input_spikes(CFG, state, generator(0))
    assert spikes.shape == (2, CFG.ms_per_step, maze.n_inputs(CFG))
    assert spikes[(prob == 0).unsqueeze(1).expand_as(spikes)].sum() == 0
    assert torch.equal(spikes, maze.input_spikes(CFG, state, generator(0)))


@pytest.mark.parametrize("code", ["rowcol", "both"])
def test_position_codes(code):
    cfg = MazeConfig(position_code=code, neurons_per_channel=2)
    k, cells, lines = 2, 20, 4 + 5
    width = {"rowcol": lines, "both": cells + lines}[code]
    assert maze.n_inputs(cfg) == (width + 4 + 3) * k
    state = maze.reset(cfg, mazes_of([19, 0], [13, 13]))
    state, _, _ = maze.step(cfg, state, torch.tensor([UP, RIGHT]))  # 13 -> 8 (row 1, col 3), 13 -> 14 (row 2, col 4)
    on = lambda ch: list(range(ch * k, (ch + 1) * k))  # noqa: E731
    pos = {"rowcol": 0, "both": cells}[code]  # where the row/column channels begin
    cell = lambda c: on(c) if code == "both" else []  # noqa: E731
    active = lambda p: (p > 0).nonzero().flatten().tolist()  # noqa: E731
    prob = maze.input_probabilities(cfg, state)
    assert active(prob[0]) == cell(8) + on(pos + 1) + on(pos + 4 + 3) + on(width + UP) + on(width + 4 + 1)
    assert active(prob[1]) == cell(14) + on(pos + 2) + on(pos + 4 + 4) + on(width + RIGHT) + on(width + 4 + 1)


@pytest.mark.parametrize("code", ["cell", "rowcol", "both"])
def test_mirror_permutations_map_a_state_onto_its_mirror_image(code):
    cfg = MazeConfig(position_code=code, neurons_per_channel=2)
    perm_in, perm_out = maze.mirror_permutations(cfg)
    assert sorted(perm_in.tolist()) == list(range(maze.n_inputs(cfg)))  # a permutation ...
    assert torch.equal(perm_in[perm_in], torch.arange(maze.n_inputs(cfg)))  # ... and an involution
    assert perm_out.tolist() == [UP, DOWN, RIGHT, LEFT, 4]  # left and right logits swap, value stays
    # Cell 8 is (row 1, col 3), its mirror 6 is (row 1, col 1); the last moves were LEFT and RIGHT.
    state = maze.reset(cfg, mazes_of([19, 15], [9, 5]))
    state, _, _ = maze.step(cfg, state, torch.tensor([LEFT, RIGHT]))  # 9 -> 8, 5 -> 6
    mirrored = maze.reset(cfg, mazes_of([15, 19], [5, 9]))
    mirrored, _, _ = maze.step(cfg, mirrored, torch.tensor([RIGHT, LEFT]))  # 5 -> 6, 9 -> 8
    assert mirrored.pos.tolist() == [6, 8]
    prob, prob_mirrored = maze.input_probabilities(cfg, state), maze.input_probabilities(cfg, mirrored)
    assert torch.equal(prob_mirrored, prob[..., perm_in])
    assert not torch.equal(prob_mirrored, prob)


def test_oracle_by_hand():
    # Goal 0, start 19 (7 moves: 6 x -0.1 + 1), respawn 1 then 5 (1 move each: +1, +1), then 18
    # (6 moves away; 1 move left in the episode: -0.1). Total 0.4 + 1 + 1 - 0.1 = 2.3.
    cfg = MazeConfig(n_steps=10)
    traj = rollout(cfg, mazes_of(0, 19, respawn=[1, 5, 18], n_steps=10), oracle_policy(cfg))
    assert traj.total_reward().item() == pytest.approx(2.3)
    assert traj.reached.nonzero().flatten().tolist() == [6, 7, 8]
    stats = exploit_statistic(traj.reached)
    assert stats.first_find.item() == 7 and stats.later_trip.item() == 1.0


def test_oracle_first_trip_is_the_mean_manhattan_distance():
    # Over all 4 goals x 19 start cells, a first trip takes sum_{r,c}(r + c) / 19 = 70 / 19 moves.
    goal = torch.tensor([0, 4, 15, 19]).repeat_interleave(19)
    start = torch.cat([torch.tensor([c for c in range(20) if c != g]) for g in (0, 4, 15, 19)])
    cfg = MazeConfig(n_steps=8)
    traj = rollout(cfg, mazes_of(goal, start, n_steps=8), oracle_policy(cfg))
    assert exploit_statistic(traj.reached).first_find.mean().item() == pytest.approx(70 / 19)


def test_explorer_searches_corners_nearest_first():
    # From 6 (row 1, col 1) the nearest corner is 0 (2 moves); from 0, 15 (3) beats 4 (4); from 15,
    # 19 (4) beats 4 (7); the goal at 4 is found last.
    traj = rollout(CFG, mazes_of(4, 6, respawn=[9]), explorer_policy(CFG))
    # 6 -> 0: 2 moves; 0 -> 15: 3; 15 -> 19: 4; 19 -> 4: 3. First find after 12 moves, then the
    # respawns at 9 are one move from the goal.
    stats = exploit_statistic(traj.reached)
    assert stats.first_find.item() == 12 and stats.later_trip.item() == 1.0
    assert traj.pos[:12].tolist() == [6, 1, 0, 5, 10, 15, 16, 17, 18, 19, 14, 9]


def test_baselines_rank_on_the_same_mazes():
    mazes = maze.sample_mazes(CFG, generator(0, 8), 256)
    res = play_baselines(CFG, mazes, generator(0, 8, 1))
    total = {k: v.total_reward().mean().item() for k, v in res.items()}
    assert total["random"] < 0 < total["explorer"] < total["oracle"]
    ex, orc = exploit_statistic(res["explorer"].reached), exploit_statistic(res["oracle"].reached)
    # The explorer searches first, then exploits as well as the oracle does.
    assert ex.first_find.mean() > orc.first_find.mean() + 2
    assert ex.later_trip.nanmean().item() == pytest.approx(orc.later_trip.nanmean().item(), abs=0.3)


def test_balanced_batches_hold_every_corner_equally_and_each_goal_stays_uniform():
    counts = torch.zeros(4)
    for seed in range(200):
        m = maze.sample_mazes(CFG, generator(seed, 99), 16, balanced=True)
        per_corner = (m.goal.unsqueeze(1) == maze.corners(CFG)).sum(0)
        assert per_corner.tolist() == [4, 4, 4, 4]
        assert not (m.start == m.goal).any()
        counts += (m.goal[0] == maze.corners(CFG)).float()  # the first maze's goal, over seeds
    assert counts.min() > 30  # ~50 each: uniform, not always the same corner first


def test_relocating_goal_by_hand():
    # The search curriculum: goal 19, start 18; after the 1st find the goal moves to 0 and the agent
    # respawns at 3, after the 2nd it moves to 4 and the agent respawns at 11.
    mazes = mazes_of(19, 18, respawn=[3, 11])._replace(next_goal=torch.tensor([0, 4] + [15] * (CFG.n_steps - 2)))
    state = maze.reset(CFG, mazes)
    state, r, hit = maze.step(CFG, state, torch.tensor(RIGHT))
    assert (state.pos.item(), state.goal.item(), r.item(), hit.item()) == (3, 0, 1.0, True)
    state, r, hit = maze.step(CFG, state, torch.tensor(DOWN))  # 3 -> 8, nothing
    state, r, hit = maze.step(CFG, state, torch.tensor(UP))  # back to 3
    for cell in (2, 1):
        state, r, hit = maze.step(CFG, state, torch.tensor(LEFT))
        assert (state.pos.item(), r.item(), hit.item()) == (cell, pytest.approx(-0.1), False)
    state, r, hit = maze.step(CFG, state, torch.tensor(LEFT))  # into 0: the goal now
    assert (state.pos.item(), state.goal.item(), state.n_found.item(), r.item()) == (11, 4, 2, 1.0)
    # The old goal pays nothing any more.
    state = maze.reset(CFG, mazes)
    state, _, _ = maze.step(CFG, state, torch.tensor(RIGHT))  # find 19 -> respawn 3, goal 0
    state = state._replace(pos=torch.tensor(18))
    state, r, hit = maze.step(CFG, state, torch.tensor(RIGHT))
    assert (state.pos.item(), r.item(), hit.item()) == (19, pytest.approx(-0.1), False)


def test_relocating_mazes_are_drawn_after_the_family_and_respawn_off_the_new_goal():
    plain = maze.sample_mazes(CFG, generator(4, 2, 7), 64, balanced=True)
    moving = maze.sample_mazes(CFG, generator(4, 2, 7), 64, balanced=True, relocate=True)
    assert plain.next_goal is None
    assert torch.equal(plain.goal, moving.goal) and torch.equal(plain.start, moving.start)
    assert set(moving.next_goal.flatten().tolist()) == {0, 4, 15, 19}
    assert (moving.respawn != moving.next_goal).all()
    assert (moving.next_goal[:, 0] != moving.goal).any()  # it does move
    # Population broadcasting carries the sequence.
    state = maze.reset(CFG, moving, (3,))
    assert state.next_goal.shape == (3, 64, CFG.n_steps) and torch.equal(state.next_goal[2], moving.next_goal)


def test_the_curriculum_covers_only_early_training_mazes():
    from es_l2l.config import ExperimentConfig
    from es_l2l.families.maze.evaluate import maze_batch
    from es_l2l.seeds import STREAM_TRAIN, STREAM_VALIDATION

    cfg = ExperimentConfig.model_validate({"task": {"family": "maze", "search_curriculum": 3}})
    # Training generations (and A2C steps) count from 1: the first 3 relocate.
    assert maze_batch(cfg.task, (0, STREAM_TRAIN, 1), 8)[0].next_goal is not None
    assert maze_batch(cfg.task, (0, STREAM_TRAIN, 3), 8)[0].next_goal is not None
    assert maze_batch(cfg.task, (0, STREAM_TRAIN, 3, 1), 8)[0].next_goal is not None  # hybrid's inner steps
    assert maze_batch(cfg.task, (0, STREAM_TRAIN, 4), 8)[0].next_goal is None
    assert maze_batch(cfg.task, (0, STREAM_VALIDATION), 8)[0].next_goal is None
    assert maze_batch(cfg.task, (0, STREAM_VALIDATION, 0), 8)[0].next_goal is None
