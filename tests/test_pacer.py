"""The team's Pacer (maths/team.py): batches go to the team while it is the faster,
and run alone (the same bits) while it is not, e.g. with another process busy."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from convprop import Network
from convprop.maths import split, team
from convprop.maths.network import get_num_threads, set_num_threads


def drive(pacer, key, seconds):
    """One batch: the pacer's choice, then the time that mode took (seconds[mode])."""
    mode = pacer.team(key)
    pacer.took(mode, seconds[mode])
    return mode


def test_the_pacer_times_both_modes_and_keeps_the_faster():
    pacer = team.Pacer()
    fast_team = {True: 1.0, False: 2.0}
    modes = [drive(pacer, "a", fast_team) for _ in range(3 * pacer.PROBE)]
    first = pacer.WINDOW
    assert modes[:first] == [False] * first  # the first batches alone, timed
    alone = [i + 1 for i, m in enumerate(modes) if not m][first:]
    assert alone == [pacer.PROBE, 2 * pacer.PROBE, 3 * pacer.PROBE]  # only the probes


def test_a_slower_team_is_left_for_spells_and_timed_afresh():
    pacer = team.Pacer()
    w = pacer.WINDOW
    slow_team = {True: 4.0, False: 2.0}
    modes = [drive(pacer, "a", slow_team) for _ in range(3 * w + 1)]
    # alone (timed), the team (its first batch, a worker waking up, untimed), then
    # alone again to time that afresh
    assert modes == [False] * w + [True] * (w + 1) + [False] * w
    held = [drive(pacer, "a", slow_team) for _ in range(pacer.HOLD)]
    assert held == [False] * pacer.HOLD  # still slower: alone for HOLD batches
    again = [drive(pacer, "a", slow_team) for _ in range(2 * w + 1 + pacer.HOLD)]
    assert again == [True] * (w + 1) + [False] * (w + pacer.HOLD)  # and again
    # the team is timed afresh (its old times forgotten): now it is the faster
    fast_again = {True: 1.0, False: 2.0}
    after = [drive(pacer, "a", fast_again) for _ in range(4 * w)]
    assert after == [True] * (4 * w)


def test_a_machine_that_slowed_for_both_modes_keeps_the_team():
    """The team's times rise because the whole machine slowed: timed afresh, the
    caller alone is as slow, so the team keeps the batches (no spell alone)."""
    pacer = team.Pacer()
    w = pacer.WINDOW
    for _ in range(w + 1):
        drive(pacer, "a", {True: 1.0, False: 2.0})
    slowed = {True: 3.5, False: 3.0}  # both slower than the old alone time of 2.0
    modes = [drive(pacer, "a", slowed) for _ in range(w + w + 3 * w)]
    assert modes[:w] == [True] * w  # the team's window fills with slow times
    assert modes[w:2 * w] == [False] * w  # alone timed afresh: as slow
    assert modes[2 * w:] == [True] * (3 * w)  # so the team goes on
    assert pacer.hold == 0


def test_a_team_only_a_little_slower_keeps_its_batches():
    """Within MARGIN (noise on a shared machine), the team keeps the batches."""
    pacer = team.Pacer()
    nearly = {True: 2.0 * (pacer.MARGIN - 0.05), False: 2.0}
    modes = [drive(pacer, "a", nearly) for _ in range(pacer.PROBE - 1)]
    assert modes[pacer.WINDOW:] == [True] * (pacer.PROBE - 1 - pacer.WINDOW)


def test_one_slow_waking_batch_does_not_send_the_team_away():
    """The first team batch after a spell alone (a worker that slept) is far slower;
    it is not counted, and two slow batches do not move a median of nine."""
    pacer = team.Pacer()
    for _ in range(pacer.WINDOW):
        drive(pacer, "a", {True: 1.0, False: 2.0})
    times = [50.0, 9.0, 1.0, 9.0] + [1.0] * (pacer.WINDOW + 2)  # waking, then a few slow
    for s in times:
        assert pacer.team("a")
        pacer.took(True, s)
    assert pacer.hold == 0 and pacer.team("a")


def test_a_new_network_or_split_starts_the_pacer_afresh():
    pacer = team.Pacer()
    for _ in range(pacer.WINDOW + 1):
        drive(pacer, "a", {True: 1.0, False: 2.0})
    assert pacer.team("a") is True
    assert [pacer.team("b") for _ in range(pacer.WINDOW)] == [False] * pacer.WINDOW


@pytest.mark.skipif(os.name != "posix", reason="the team runs on POSIX only")
def test_a_slow_team_sends_the_batches_home_with_the_same_bits(monkeypatch):
    """A team made slow (the caller's share of each shared batch 20 ms late): after the
    first timings the caller runs the batches alone, the team untouched for HOLD
    batches, and every result equals one thread's."""
    before = get_num_threads()
    real = split.Plan.run

    def slow(self, sync):  # the caller's share, 20 ms late (the worker waits, awake)
        time.sleep(0.02)
        return real(self, sync)

    monkeypatch.setattr(split.Plan, "run", slow)
    monkeypatch.setattr(team.Pacer, "HOLD", 10)
    net = Network.from_spec("6c5-2s-12c5-2s", seed=1)
    ref = Network.from_spec("6c5-2s-12c5-2s", seed=1)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (50, 28, 28)), rng.integers(0, 10, 50)
    try:
        set_num_threads(1)
        want = ref.loss_and_grads(x, y)
        set_num_threads(2)
        team.start(2)
        members = team._TEAM["team"]
        members.pacer = team.Pacer()  # a team left by other tests: no timings yet
        deadline = time.monotonic() + 120
        while not all(w.settled() for w in members.workers):
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.01)
        jobs = [members.jobs]
        for _ in range(2 * team.Pacer.WINDOW + 2 + 10):
            got = net.loss_and_grads(x, y)
            assert got[0] == want[0]
            for k in want[1]:
                np.testing.assert_array_equal(got[1][k], want[1][k])
            jobs.append(members.jobs)
    finally:
        set_num_threads(before)
    went = np.diff(jobs) > 0  # which batches the team took
    w = team.Pacer.WINDOW
    assert not went[:w].any()  # alone first, timed
    assert went[w:2 * w + 2].all()  # then the team (its setup, its first after a spell
    assert not went[2 * w + 2:].any()  # alone untimed): slower, so HOLD batches alone
