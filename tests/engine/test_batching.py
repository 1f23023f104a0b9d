"""The one batching engine (engine.batching) that streams and `mrcnn serve` share: groups, order,
failures, cancellation and shutdown, synchronised on events the runs set (no sleeps)."""
import threading

import pytest

from mrcnn_cli.engine.batching import BatchEngine, EngineClosed, QueueFull


class GatedRun:
    """run_batch that records each group, and holds the first one until `release()`."""

    def __init__(self, fail_on=None):
        self.groups, self.fail_on = [], fail_on
        self.started, self.gate = threading.Event(), threading.Event()

    def __call__(self, jobs):
        self.groups.append(list(jobs))
        self.started.set()
        self.gate.wait()
        if self.fail_on in jobs:
            raise RuntimeError(f'group with {self.fail_on} failed')
        return [f'out-{j}' for j in jobs]

    def release(self):
        self.gate.set()


def held_engine(run, **options):
    """An engine whose model thread is busy with job 'first' until run.release()."""
    engine = BatchEngine(run, **options)
    first = engine.submit('first')
    assert run.started.wait(30)
    return engine, first


def test_jobs_queued_while_the_model_is_busy_run_in_groups_in_order():
    run = GatedRun()
    engine, first = held_engine(run, max_batch=3, max_delay=0)
    futures = [engine.submit(i) for i in range(5)]
    assert engine.depth == 5
    run.release()
    assert [f.result(30) for f in futures] == [f'out-{i}' for i in range(5)] and first.result(30) == 'out-first'
    assert run.groups == [['first'], [0, 1, 2], [3, 4]]
    engine.close()


def test_each_job_gets_what_it_would_get_alone():
    run = GatedRun()
    run.release()
    with BatchEngine(run, max_batch=1) as alone:
        one = [alone.submit(i).result(30) for i in range(6)]
    run2 = GatedRun()
    engine, _ = held_engine(run2, max_batch=4, max_delay=0)
    futures = [engine.submit(i) for i in range(6)]
    run2.release()
    assert [f.result(30) for f in futures] == one and max(len(g) for g in run2.groups) == 4
    engine.close()


def test_a_failing_group_fails_its_jobs_only():
    run = GatedRun(fail_on='bad')
    engine, _ = held_engine(run, max_batch=2, max_delay=0)
    bad, mate, later = engine.submit('bad'), engine.submit('mate'), engine.submit('later')
    run.release()
    for f in (bad, mate):
        with pytest.raises(RuntimeError, match='group with bad failed'):
            f.result(30)
    assert later.result(30) == 'out-later'
    engine.close()


def test_a_cancelled_job_never_runs():
    run = GatedRun()
    engine, _ = held_engine(run, max_batch=4, max_delay=0)
    gone, kept = engine.submit('gone'), engine.submit('kept')
    assert gone.cancel()
    run.release()
    assert kept.result(30) == 'out-kept'
    assert all('gone' not in g for g in run.groups)
    engine.close()


def test_a_full_queue_refuses_or_makes_the_submitter_wait_until_closed():
    run = GatedRun()
    engine, _ = held_engine(run, max_batch=1, max_delay=0, queue_size=2)
    engine.submit(1), engine.submit(2)
    with pytest.raises(QueueFull):
        engine.submit(3)
    waited = []

    def blocked_submitter():
        try:
            engine.submit(4, block=True)
        except EngineClosed:
            waited.append('closed')
    t = threading.Thread(target=blocked_submitter)
    t.start()
    closer = threading.Thread(target=engine.close, kwargs={'cancel': True})
    closer.start()
    t.join(30)
    assert waited == ['closed']
    run.release()
    closer.join(30)
    assert not engine.thread.is_alive()


def test_close_runs_what_is_queued_then_stops_and_takes_no_more():
    run = GatedRun()
    engine, _ = held_engine(run, max_batch=2, max_delay=0)
    queued = [engine.submit(i) for i in range(3)]
    run.release()
    engine.close()
    assert [f.result(0) for f in queued] == ['out-0', 'out-1', 'out-2'] and not engine.thread.is_alive()
    with pytest.raises(EngineClosed):
        engine.submit(9)


def test_close_with_cancel_drops_the_queue_and_the_group_in_flight_finishes():
    run = GatedRun()
    engine, first = held_engine(run, max_batch=2, max_delay=0)
    queued = [engine.submit(i) for i in range(3)]
    closer = threading.Thread(target=engine.close, kwargs={'cancel': True})
    closer.start()
    run.release()
    closer.join(30)
    assert first.result(0) == 'out-first' and all(f.cancelled() for f in queued)


def test_without_a_delay_a_group_waits_until_full_or_flushed():
    run = GatedRun()
    run.release()
    engine = BatchEngine(run, max_batch=3, max_delay=None)
    full = [engine.submit(i) for i in range(3)]
    assert [f.result(30) for f in full] == ['out-0', 'out-1', 'out-2']
    partial = engine.submit('alone')
    engine.flush()
    assert partial.result(30) == 'out-alone' and run.groups == [[0, 1, 2], ['alone']]
    engine.close()
