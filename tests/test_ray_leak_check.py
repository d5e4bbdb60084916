"""The suite's leak check itself (tests/conftest.py): a test that leaves a placement group behind on the
shared Ray cluster fails by name, and the next test starts on an idle cluster. Run as an inner pytest
session with this suite's conftest, in its own process and with its own private cluster."""

from __future__ import annotations

from inner_session import with_the_suites_conftest

LEAKING_TESTS = '''
def test_leaks_a_placement_group(ray_cluster):
    from ray.util.placement_group import placement_group

    assert placement_group([{"CPU": 1}]).wait(60)


HOLDERS = []  # keeps the actor below alive after its test (a dead creator's groups go with it)


def test_leaks_a_group_an_actor_created(ray_cluster):
    from ray.util.placement_group import placement_group

    @ray_cluster.remote(num_cpus=0)
    class Holder:
        def make(self):
            return placement_group([{"CPU": 1}]).wait(60)

    HOLDERS.append(Holder.remote())
    assert ray_cluster.get(HOLDERS[-1].make.remote())


def test_starts_on_an_idle_cluster(ray_cluster):
    from ray.util.placement_group import placement_group_table

    assert ray_cluster.available_resources()["CPU"] == ray_cluster.cluster_resources()["CPU"] == 2
    assert all(group["state"] == "REMOVED" for group in placement_group_table().values())


def test_without_ray_is_not_checked():
    assert True
'''


def test_a_leaking_test_fails_by_name_and_the_next_one_starts_clean(pytester, monkeypatch):
    monkeypatch.setenv("RECFOUND_TEST_LEAK_SETTLE_S", "3")
    with_the_suites_conftest(pytester)
    pytester.makepyfile(test_inner=LEAKING_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=240)
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(["*test_inner.py::test_leaks_a_placement_group leaked Ray resources: resources "
                                 "still held {'CPU': 1.0}, 1 placement group(s) left *created [[]{'CPU': 1.0}[]] (created by the driver of "
                                 "job *, alive; detached: False)*",
                                 "*test_inner.py::test_leaks_a_group_an_actor_created leaked Ray resources: resources still held "
                                 "{'CPU': 1.0}, 1 placement group(s) left *(created by actor *Holder *, ALIVE; detached: False)*"])
