"""Resource needs, node fit and worker shapes: pure, no Ray."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import UsageError
from orchestrator.scheduling.resources import (
    DEFAULT,
    Resources,
    adoptable,
    format_memory,
    missing,
    parse_memory,
    serves,
    shape_workers,
)

GIB = 1024**3
GPU = Resources(gpus=1)


# -- memory sizes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("8GiB", 8 * 1024**3),
        ("8GB", 8 * 1000**3),
        ("8G", 8 * 1000**3),
        ("512MiB", 512 * 1024**2),
        ("512MB", 512 * 1000**2),
        ("512M", 512 * 1000**2),
        ("4KiB", 4096),
        ("4KB", 4000),
        ("2TiB", 2 * 1024**4),
        ("2TB", 2 * 1000**4),
        ("1.5G", 1_500_000_000),
        ("0.5GiB", 512 * 1024**2),
        (".25MiB", 256 * 1024),
        ("100", 100),
        ("100B", 100),
        ("8 gib", 8 * 1024**3),
        ("  8Gib  ", 8 * 1024**3),
        ("0", 0),
    ],
)
def test_parse_memory_units(text: str, size: int) -> None:
    assert parse_memory(text) == size


def test_parse_memory_binary_and_decimal_units_differ() -> None:
    assert parse_memory("1GiB") - parse_memory("1GB") == 1024**3 - 1000**3


@pytest.mark.parametrize(("value", "size"), [(1024, 1024), (0, 0), (1.9, 2), (2.0e9, 2 * 10**9)])
def test_parse_memory_numbers_are_bytes(value: float, size: int) -> None:
    assert parse_memory(value) == size


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("8XB", "unknown unit 'xb'"),
        ("8 gigs", "unknown unit 'gigs'"),
        ("-1GB", "expected a size"),
        ("lots", "expected a size"),
        ("", "expected a size"),
        ("8GiB of RAM", "expected a size"),
        ("1e9", "expected a size"),
        (-1, "zero or more"),
        (-0.5, "zero or more"),
        (float("inf"), "zero or more"),
        (float("nan"), "zero or more"),
        (True, "expected a size"),
        (False, "expected a size"),
        (None, "expected a size"),
        ([8], "expected a size"),
    ],
)
def test_parse_memory_rejects(value: object, match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        parse_memory(value, "marker memory")
    assert str(info.value).startswith("marker memory: ")


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0B"), (512, "512B"), (2048, "2KiB"), (8 * GIB, "8GiB"), (1.5 * GIB, "1.5GiB")],
)
def test_format_memory(size: float, shown: str) -> None:
    assert format_memory(size) == shown


# -- needs ----------------------------------------------------------------------------


def test_from_mapping_reads_every_kind_of_need() -> None:
    need = Resources.from_mapping(
        {"cpus": 2, "gpus": 0.5, "memory": "8GiB", "tpu": 4, "licence": 1}, "here"
    )
    assert need == Resources(cpus=2, gpus=0.5, memory=8 * GIB, custom=(("licence", 1), ("tpu", 4)))
    assert need.as_ray() == {"CPU": 2, "GPU": 0.5, "memory": 8 * GIB, "licence": 1, "tpu": 4}


def test_from_an_empty_mapping_is_the_default() -> None:
    assert Resources.from_mapping({}, "here") == DEFAULT
    assert DEFAULT.as_ray() == {"CPU": 1.0}


def test_custom_resources_of_zero_are_dropped_and_sorted() -> None:
    need = Resources.from_mapping({"zeta": 1, "alpha": 2, "none": 0}, "here")
    assert need.custom == (("alpha", 2.0), ("zeta", 1.0))
    assert need == Resources.from_mapping({"alpha": 2, "zeta": 1}, "here")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"cpus": 0}, "cpus must be more than 0"),
        ({"cpus": -1}, "cpus: must be zero or more"),
        ({"cpus": "2"}, "cpus: expected a number"),
        ({"cpus": True}, "cpus: expected a number"),
        ({"gpus": -1}, "gpus: must be zero or more"),
        ({"gpus": float("inf")}, "gpus: expected a number"),
        ({"memory": "8 bananas"}, "memory: unknown unit"),
        ({"tpu": "four"}, "tpu: expected a number"),
        ({"tpu": -2}, "tpu: must be zero or more"),
        ({"CPU": 2}, "write cpus= and gpus= instead of CPU="),
        ({"GPU": 1}, "instead of GPU="),
        ({"num_cpus": 2}, "instead of num_cpus="),
        ({"num_gpus": 1}, "instead of num_gpus="),
    ],
)
def test_from_mapping_rejects(data: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        Resources.from_mapping(data, "tests/test_a.py::test_x")
    assert str(info.value).startswith("tests/test_a.py::test_x: ")


def test_merged_replaces_only_the_given_keys() -> None:
    kind_default = Resources.from_mapping({"cpus": 2, "memory": "4GiB", "tpu": 1}, "kind")
    need = kind_default.merged({"gpus": 1, "memory": "8GiB"}, "marker")
    assert need == Resources(cpus=2, gpus=1, memory=8 * GIB, custom=(("tpu", 1.0),))
    assert kind_default.merged({}, "marker") == kind_default


def test_merged_can_drop_a_custom_resource_with_zero() -> None:
    kind_default = Resources.from_mapping({"tpu": 1}, "kind")
    assert kind_default.merged({"tpu": 0}, "marker") == DEFAULT


def test_merged_validates_the_override() -> None:
    with pytest.raises(UsageError, match="marker: cpus must be more than 0"):
        DEFAULT.merged({"cpus": 0}, "marker")


def test_as_ray_leaves_out_zeros() -> None:
    assert Resources(cpus=0.5).as_ray() == {"CPU": 0.5}
    assert Resources(gpus=1, memory=GIB).as_ray() == {"CPU": 1.0, "GPU": 1, "memory": GIB}


def test_fits_in() -> None:
    node = {"CPU": 8.0, "GPU": 1.0, "memory": 16.0 * GIB, "tpu": 2.0}
    assert DEFAULT.fits_in(node)
    assert Resources(cpus=8, gpus=1, memory=16 * GIB, custom=(("tpu", 2.0),)).fits_in(node)
    assert not Resources(cpus=9).fits_in(node)
    assert not Resources(gpus=2).fits_in(node)
    assert not Resources(memory=17 * GIB).fits_in(node)
    assert not Resources(custom=(("tpu", 3.0),)).fits_in(node)
    assert not Resources(custom=(("fpga", 1.0),)).fits_in(node)
    assert not GPU.fits_in({"CPU": 8.0})


def test_fits_in_tolerates_float_rounding() -> None:
    assert Resources(cpus=0.3).fits_in({"CPU": 0.1 + 0.2})


@pytest.mark.parametrize(
    ("need", "shown"),
    [
        (DEFAULT, "cpus=1"),
        (GPU, "gpus=1"),
        (Resources(cpus=2), "cpus=2"),
        (Resources(cpus=0.5, gpus=0.25), "cpus=0.5, gpus=0.25"),
        (
            Resources(cpus=2, memory=8 * GIB, custom=(("tpu", 2.0),)),
            "cpus=2, memory=8GiB, tpu=2",
        ),
        (Resources(memory=512 * 1024**2), "memory=512MiB"),
    ],
)
def test_describe(need: Resources, shown: str) -> None:
    assert need.describe() == shown


# -- missing --------------------------------------------------------------------------


def test_missing_is_none_when_a_node_fits() -> None:
    nodes = [{"CPU": 2.0}, {"CPU": 4.0, "GPU": 1.0}]
    assert missing(GPU, nodes) is None
    assert missing(DEFAULT, nodes) is None


def test_missing_without_nodes() -> None:
    assert missing(DEFAULT, []) == "the cluster has no live nodes"


def test_missing_names_the_resource_and_the_largest_amount() -> None:
    nodes = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 16.0, "GPU": 2.0}]
    reason = missing(Resources(gpus=4), nodes)
    assert reason == "no node of the cluster has GPU 4 (the largest node has 2)"


def test_missing_shows_memory_in_units_and_every_shortfall() -> None:
    nodes = [{"CPU": 8.0, "memory": 8.0 * GIB}]
    reason = missing(Resources(cpus=2, memory=16 * GIB, custom=(("tpu", 1.0),)), nodes)
    assert reason is not None
    assert "memory 16GiB (the largest node has 8GiB)" in reason
    assert "tpu 1 (the largest node has 0)" in reason
    assert "CPU" not in reason


def test_missing_when_no_single_node_has_everything() -> None:
    nodes = [{"CPU": 8.0}, {"CPU": 1.0, "GPU": 1.0}]
    reason = missing(Resources(cpus=8, gpus=1), nodes)
    assert reason == "no single node has all of cpus=8, gpus=1"


# -- worker shapes --------------------------------------------------------------------


def test_gpu_tests_on_one_gpu_node_get_one_gpu_worker_and_cpu_workers() -> None:
    node = {"CPU": 8.0, "GPU": 1.0, "memory": 32.0 * GIB}
    plan = shape_workers({DEFAULT: 10.0, GPU: 30.0}, {DEFAULT: 40, GPU: 6}, [node], limit=8)
    assert plan.unplaced == {}
    assert sorted(plan.shapes) == sorted([GPU] + [DEFAULT] * 7)
    assert plan.shapes[0] == GPU  # the scarce shape is placed first


def test_cpu_workers_stop_at_the_limit() -> None:
    node = {"CPU": 16.0, "GPU": 1.0}
    plan = shape_workers({DEFAULT: 10.0, GPU: 1.0}, {DEFAULT: 40, GPU: 1}, [node], limit=4)
    assert sorted(plan.shapes) == sorted([GPU] + [DEFAULT] * 3)


def test_cpu_workers_stop_at_the_free_cpus() -> None:
    plan = shape_workers({DEFAULT: 10.0}, {DEFAULT: 100}, [{"CPU": 3.5}, {"CPU": 2.0}], 16)
    assert plan.shapes == (DEFAULT,) * 5
    assert plan.unplaced == {}


def test_gpu_only_work_starts_no_cpu_workers() -> None:
    plan = shape_workers({GPU: 5.0}, {GPU: 1}, [{"CPU": 8.0, "GPU": 1.0}], limit=8)
    assert plan.shapes == (GPU,)


def test_a_gpu_worker_covers_cpu_tests_when_no_cpu_is_left() -> None:
    plan = shape_workers({DEFAULT: 1.0, GPU: 1.0}, {DEFAULT: 3, GPU: 1}, [{"CPU": 1, "GPU": 1}], 4)
    assert plan.shapes == (GPU,)
    assert plan.unplaced == {}


def test_a_need_no_node_has_is_unplaced_with_the_reason() -> None:
    two_gpus = Resources(gpus=2)
    nodes = [{"CPU": 8.0, "GPU": 1.0}]
    plan = shape_workers({DEFAULT: 1.0, two_gpus: 1.0}, {DEFAULT: 1, two_gpus: 1}, nodes, 4)
    assert plan.unplaced == {two_gpus: "no node of the cluster has GPU 2 (the largest node has 1)"}
    assert two_gpus not in plan.shapes
    assert plan.shapes == (DEFAULT,) * 4


def test_every_distinct_need_gets_a_worker_even_past_the_limit() -> None:
    needs = [Resources(cpus=2), GPU, Resources(custom=(("tpu", 1.0),))]
    node = {"CPU": 16.0, "GPU": 1.0, "tpu": 1.0}
    plan = shape_workers(dict.fromkeys(needs, 1.0), dict.fromkeys(needs, 1), [node], limit=1)
    assert sorted(plan.shapes) == sorted(needs)
    assert plan.unplaced == {}


def test_more_workers_go_where_the_work_is() -> None:
    big = Resources(cpus=2)
    work = {DEFAULT: 1.0, big: 9.0}
    plan = shape_workers(work, {DEFAULT: 10, big: 10}, [{"CPU": 64.0}], limit=10)
    assert plan.shapes.count(big) == 9
    assert plan.shapes.count(DEFAULT) == 1


def test_no_more_workers_of_a_shape_than_tests_of_it() -> None:
    big = Resources(cpus=2)
    plan = shape_workers({DEFAULT: 1.0, big: 99.0}, {DEFAULT: 5, big: 2}, [{"CPU": 64.0}], 8)
    assert plan.shapes.count(big) == 2
    assert len(plan.shapes) == 8


def test_a_larger_worker_covers_a_smaller_need_at_the_limit() -> None:
    small, large = Resources(cpus=2), Resources(cpus=4)
    plan = shape_workers({small: 1.0, large: 1.0}, {small: 1, large: 1}, [{"CPU": 64.0}], 1)
    assert plan.shapes == (large,)
    assert plan.unplaced == {}


# Random clusters and needs for the properties below.
_amounts = st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0])
nodes_st = st.lists(
    st.fixed_dictionaries(
        {
            "CPU": st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0]),
            "GPU": st.sampled_from([0.0, 1.0, 2.0]),
            "memory": st.sampled_from([0.0, 4.0 * GIB, 16.0 * GIB]),
            "tpu": st.sampled_from([0.0, 1.0]),
        }
    ),
    min_size=0,
    max_size=4,
)
need_st = st.builds(
    Resources,
    cpus=st.sampled_from([0.5, 1.0, 2.0, 4.0, 16.0]),
    gpus=st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0]),
    memory=st.sampled_from([0, 0, 2 * GIB, 8 * GIB, 32 * GIB]),
    custom=st.sampled_from([(), (), (("tpu", 1.0),)]),
)
work_st = st.dictionaries(
    need_st, st.floats(min_value=0.01, max_value=100.0), min_size=1, max_size=6
)


def _packs(shapes: Sequence[Resources], nodes: Sequence[Mapping[str, float]]) -> bool:
    """Whether ``shapes`` can all be placed on ``nodes`` at once (searching every
    placement, whatever heuristic the code under test used)."""
    order = sorted(shapes, reverse=True)
    free = [dict(node) for node in nodes]

    def place(i: int) -> bool:
        if i == len(order):
            return True
        need = order[i].as_ray()
        tried: list[dict[str, float]] = []
        for node in free:
            if not order[i].fits_in(node) or node in tried:
                continue
            tried.append(dict(node))
            for name, amount in need.items():
                node[name] = node.get(name, 0.0) - amount
            if place(i + 1):
                return True
            for name, amount in need.items():
                node[name] += amount
        return False

    return place(0)


def _counts(work: Mapping[Resources, float], data: st.DataObject) -> dict[Resources, int]:
    return {need: data.draw(st.integers(1, 12)) for need in work}


@settings(max_examples=60, deadline=None)
@given(work_st, nodes_st, st.integers(min_value=1, max_value=12), st.data())
def test_shapes_always_fit_the_nodes(
    work: dict[Resources, float], nodes: list[dict[str, float]], limit: int, data: st.DataObject
) -> None:
    plan = shape_workers(work, _counts(work, data), nodes, limit)
    assert _packs(plan.shapes, nodes)


@settings(max_examples=60, deadline=None)
@given(work_st, nodes_st, st.integers(min_value=1, max_value=12), st.data())
def test_every_need_is_covered_or_unplaced_with_a_reason(
    work: dict[Resources, float], nodes: list[dict[str, float]], limit: int, data: st.DataObject
) -> None:
    plan = shape_workers(work, _counts(work, data), nodes, limit)
    for need in work:
        covered = any(need.fits_in(shape.as_ray()) for shape in plan.shapes)
        assert covered != (need in plan.unplaced), need
        if missing(need, nodes) is not None:
            assert plan.unplaced[need] == missing(need, nodes)
    assert set(plan.unplaced) <= set(work)
    assert all(plan.unplaced.values())


@settings(max_examples=60, deadline=None)
@given(work_st, st.integers(min_value=1, max_value=12), st.data())
def test_every_placeable_need_is_covered_on_a_roomy_node(
    work: dict[Resources, float], limit: int, data: st.DataObject
) -> None:
    # One node with room for one worker of each need at once: placement cannot fail.
    room: dict[str, float] = {"CPU": 1.0}
    for need in work:
        for name, amount in need.as_ray().items():
            room[name] = room.get(name, 0.0) + amount
    plan = shape_workers(work, _counts(work, data), [room], limit)
    assert plan.unplaced == {}
    for need in work:
        assert any(need.fits_in(shape.as_ray()) for shape in plan.shapes), need


@settings(max_examples=60, deadline=None)
@given(work_st, nodes_st, st.integers(min_value=1, max_value=12), st.data())
def test_the_limit_bounds_the_workers(
    work: dict[Resources, float], nodes: list[dict[str, float]], limit: int, data: st.DataObject
) -> None:
    plan = shape_workers(work, _counts(work, data), nodes, limit)
    distinct = {shape for shape in plan.shapes if shape != DEFAULT}
    # Past the limit only to give each distinct need one worker of its own: one ordinary
    # worker at most, when the special ones cannot run the ordinary tests.
    assert len(plan.shapes) <= max(limit, len(distinct) + (DEFAULT in plan.shapes))
    if DEFAULT in plan.shapes and len(plan.shapes) > limit:
        assert plan.shapes.count(DEFAULT) == 1
        # ... because some ordinary-sized need fits none of the special workers.
        assert any(
            not any(n.fits_in(s.as_ray()) for s in distinct)
            for n in work
            if n.fits_in(DEFAULT.as_ray())
        )
    if DEFAULT in plan.shapes and DEFAULT not in work:
        assert any(need.fits_in(DEFAULT.as_ray()) for need in work)


def test_extra_special_workers_leave_the_ordinary_one_its_place() -> None:
    # Found by hypothesis: the second worker for the busiest need took the last place,
    # and the ordinary worker the 1-CPU tests needed went past the limit.
    half_2g = Resources(cpus=0.5, memory=2 * GIB)
    work = {
        half_2g: 2.0,
        Resources(cpus=0.5): 1.0,
        Resources(cpus=0.5, memory=8 * GIB): 1.0,
        Resources(cpus=0.5, gpus=0.5): 1.0,
        DEFAULT: 1.0,
        Resources(cpus=2): 1.0,
    }
    counts = dict.fromkeys(work, 1) | {half_2g: 2}
    nodes = [
        {"CPU": 0.5, "GPU": 0.0, "memory": 0.0},
        {"CPU": 1.0, "GPU": 0.0, "memory": 0.0},
        {"CPU": 1.0, "GPU": 0.0, "memory": 4.0 * GIB},
    ]
    plan = shape_workers(work, counts, nodes, 3)
    assert len(plan.shapes) == 3
    assert DEFAULT in plan.shapes


@settings(max_examples=30, deadline=None)
@given(work_st, nodes_st, st.integers(min_value=1, max_value=12), st.data())
def test_shapes_are_deterministic(
    work: dict[Resources, float], nodes: list[dict[str, float]], limit: int, data: st.DataObject
) -> None:
    counts = _counts(work, data)
    assert shape_workers(work, counts, nodes, limit) == shape_workers(work, counts, nodes, limit)


# -- which needs a worker serves -------------------------------------------------------


def test_serves_own_need_first_then_larger_demands_first() -> None:
    big_cpu = Resources(cpus=4)
    with_memory = Resources(cpus=2, memory=8 * GIB)
    gpu_worker = Resources(cpus=4, gpus=1, memory=16 * GIB)
    needs = [DEFAULT, big_cpu, GPU, gpu_worker, with_memory]
    order = serves(gpu_worker, needs)
    assert [needs[i] for i in order] == [gpu_worker, GPU, with_memory, big_cpu, DEFAULT]


def test_serves_leaves_out_needs_that_do_not_fit() -> None:
    tpu = Resources(custom=(("tpu", 1.0),))
    needs = [DEFAULT, GPU, Resources(cpus=2), tpu]
    assert serves(DEFAULT, needs) == [0]
    assert serves(GPU, needs) == [1, 0]
    assert serves(tpu, needs) == [3, 0]


def test_serves_a_shape_not_among_the_needs() -> None:
    needs = [DEFAULT, Resources(cpus=2), Resources(cpus=8)]
    assert serves(Resources(cpus=4), needs) == [1, 0]


def test_serves_prefers_custom_resources_over_cpus() -> None:
    needs = [Resources(cpus=2), DEFAULT, Resources(cpus=2, custom=(("a", 1.0),))]
    worker = Resources(cpus=2, custom=(("a", 1.0), ("b", 1.0)))
    assert serves(worker, needs) == [2, 0, 1]


def test_serves_ties_keep_the_needs_order() -> None:
    needs = [Resources(custom=(("b", 1.0),)), Resources(custom=(("a", 1.0),)), DEFAULT]
    worker = Resources(cpus=2, custom=(("a", 1.0), ("b", 1.0)))
    assert serves(worker, needs) == [0, 1, 2]


# -- which workers started early a run keeps ---------------------------------------------


TWO_NODES = {"head": {"CPU": 1.0}, "gpu": {"CPU": 1.0, "GPU": 1.0}}


@pytest.mark.parametrize(
    ("early", "kept"),
    [
        ([("gw0", "gpu"), ("gw1", "head")], ["gw1"]),
        ([("gw0", "head"), ("gw1", "gpu")], ["gw0"]),
        ([("gw0", None), ("gw1", "gpu")], ["gw0"]),  # holds no CPU: always kept
        ([("gw0", "gpu")], []),
    ],
)
def test_an_early_worker_does_not_keep_the_gpu_nodes_only_cpu(
    early: list[tuple[str, str | None]], kept: list[str]
) -> None:
    assert adoptable(early, TWO_NODES, [GPU], 1) == kept


def test_without_shaped_workers_the_first_early_workers_are_kept() -> None:
    early = [("gw0", "gpu"), ("gw1", "head")]
    assert adoptable(early, TWO_NODES, [], 1) == ["gw0"]
    assert adoptable(early, TWO_NODES, [], 2) == ["gw0", "gw1"]


def test_a_shape_that_fits_nowhere_anyway_keeps_every_early_worker() -> None:
    early = [("gw0", "gpu"), ("gw1", "head")]
    assert adoptable(early, TWO_NODES, [Resources(gpus=2)], 2) == ["gw0", "gw1"]


def test_a_node_with_room_for_both_keeps_its_early_worker() -> None:
    nodes = {"head": {"CPU": 1.0}, "gpu": {"CPU": 2.0, "GPU": 1.0}}
    assert adoptable([("gw0", "gpu"), ("gw1", "head")], nodes, [GPU], 2) == ["gw0", "gw1"]


@settings(max_examples=80, deadline=None)
@given(work_st, nodes_st, st.integers(min_value=1, max_value=8), st.data())
def test_kept_early_workers_leave_room_for_the_shaped_ones(
    work: dict[Resources, float], nodes: list[dict[str, float]], limit: int, data: st.DataObject
) -> None:
    plan = shape_workers(work, _counts(work, data), nodes, limit)
    special = [shape for shape in plan.shapes if shape != DEFAULT]
    by_id = {f"n{i}": node for i, node in enumerate(nodes)}
    # Early workers as Ray would have placed them: a CPU each, where one is free.
    free = {node_id: node.get("CPU", 0.0) for node_id, node in by_id.items()}
    early: list[tuple[str, str | None]] = []
    for i in range(data.draw(st.integers(0, 8))):
        places = [n for n, cpus in free.items() if cpus >= 1.0]
        node = data.draw(st.sampled_from([None, *places]))
        if node is not None:
            free[node] -= 1.0
        early.append((f"gw{i}", node))
    wanted = data.draw(st.integers(0, len(early)))
    kept = adoptable(early, by_id, special, wanted)
    assert len(kept) <= wanted
    assert kept == [worker for worker, _ in early if worker in kept]  # in their order
    where = dict(early)
    left = {node_id: dict(node) for node_id, node in by_id.items()}
    for worker in kept:
        node = where[worker]
        if node is not None:
            left[node]["CPU"] -= 1.0
    assert _packs(special, list(left.values()))
    if not special:
        assert kept == [worker for worker, _ in early[:wanted]]
    # One that holds no CPU is never turned away while places are left.
    for position, (worker, node) in enumerate(early):
        before = [w for w, _ in early[:position] if w in kept]
        if node is None and len(before) < wanted:
            assert worker in kept
