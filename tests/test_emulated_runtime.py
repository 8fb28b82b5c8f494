"""The emulator itself (csrc/testing/cuda_on_cpu.h): a correct kernel runs under every schedule
and build, and each broken rule is reported (drive_emulator_checks.cpp)."""

import numpy as np
import pytest

from emulated_harness import EmulatorFailure, run

pytestmark = pytest.mark.emulated

EXPECTED_SUM = 3 * sum(i % 7 for i in range(1000))  # three blocks add the same block sum


def case(mode):
    return {"mode": np.array(mode, dtype=np.int64)}


@pytest.mark.parametrize("variant,schedule,block_order", [
    ("plain", "forward", "forward"), ("plain", "reverse", "reverse"),
    ("plain", "random:5", "shuffle:2"), ("asan", "random:1", "forward"),
    ("tsan", "reverse", "forward"),
])
def test_correct_kernel_runs(variant, schedule, block_order):
    (out,) = run("drive_emulator_checks", [case(0)], variant=variant, schedule=schedule,
                 block_order=block_order)
    assert out["sum"] == EXPECTED_SUM


@pytest.mark.parametrize("mode,report", [
    (1, r"divergent __syncthreads: 1 of 128 threads exited"),
    (2, r"divergent __syncthreads: threads wait at different barriers"),
    (3, r"__shfl_xor_sync .* mask 0xffffffdf, which leaves out its own lane"),
    (4, r"waits for lane 7 .* which has exited"),
    (5, r"reads lane 20, which is not in the mask 0xffff"),
    (6, r"deadlock: no thread can run"),
    (7, r"launch refused on the emulated H100 \(sm_90\): 128 B static \+ 49152 B dynamic"),
    (8, r"launch refused on the emulated H100 \(sm_90\): block dimension x = 2048"),
    (10, r"launch refused .* > 232448 B \(the opt-in maximum\)"),
])
def test_broken_rule_is_reported(mode, report):
    with pytest.raises(EmulatorFailure, match=report):
        run("drive_emulator_checks", [case(mode)])


def test_missing_barrier_is_a_race_under_tsan_and_a_wrong_sum_in_reverse_order():
    with pytest.raises(EmulatorFailure, match="ThreadSanitizer: data race"):
        run("drive_emulator_checks", [case(9)], variant="tsan")
    (out,) = run("drive_emulator_checks", [case(9)], schedule="reverse")
    assert out["sum"] != EXPECTED_SUM


# Cooperative launches (grid_exchange in drive_emulator_checks.cpp): 3 blocks each publish b + 1,
# sync the grid and add up all three.
COOPERATIVE_SUM = 3 * (1 + 2 + 3)


@pytest.mark.parametrize("variant,schedule,block_order", [
    ("plain", "forward", "forward"), ("plain", "reverse", "reverse"),
    ("plain", "random:5", "shuffle:2"), ("asan", "random:1", "forward"),
    ("tsan", "reverse", "shuffle:4"),
])
def test_cooperative_launch_with_grid_sync_runs(variant, schedule, block_order):
    (out,) = run("drive_emulator_checks", [case(11)], variant=variant, schedule=schedule,
                 block_order=block_order)
    assert out["sum"] == COOPERATIVE_SUM


@pytest.mark.parametrize("mode,report", [
    (13, r"grid sync .* in a kernel that was not launched cooperatively"),
    (14, r"cooperative launch refused on the emulated H100 \(sm_90\): 265 blocks > 264 "
         r"co-resident .*cudaErrorCooperativeLaunchTooLarge"),
    (15, r"divergent grid sync: 1 of 192 threads of the grid exited"),
    (16, r"divergent sync: threads of a block wait at __syncthreads"),
])
def test_broken_grid_sync_is_reported(mode, report):
    with pytest.raises(EmulatorFailure, match=report):
        run("drive_emulator_checks", [case(mode)])


def test_missing_grid_sync_is_a_race_between_blocks_under_tsan_and_a_wrong_sum():
    with pytest.raises(EmulatorFailure, match="ThreadSanitizer: data race"):
        run("drive_emulator_checks", [case(12)], variant="tsan")
    (out,) = run("drive_emulator_checks", [case(12)])  # block 0 reads before 1 and 2 write
    assert out["sum"] != COOPERATIVE_SUM
