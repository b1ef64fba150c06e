"""The ``winhv`` pytest plugin, tested the way users meet it: test files run by ``pytester``
with the plugin loaded from its ``pytest11`` entry point, including what a failure prints."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]

#: A tiny device pair the inner test files share (written as their conftest.py).
CONFTEST = '''
import uuid
from winhv.plugins.api import Vsc, Vsp

UPPER_IF = uuid.UUID("0d3f4a52-6b7c-4d8e-9f01-a2b3c4d5e6f7")


class UpperVsp(Vsp):
    interface_id = UPPER_IF

    def on_packet(self, channel, packet):
        channel.complete(packet.trans_id, bytes(packet.payload).upper())


class UpperVsc(Vsc):
    interface_ids = (UPPER_IF,)

    def on_open(self, channel):
        self.channel = channel
'''


@pytest.fixture
def tester(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    return pytester


def test_the_plugin_is_loaded_from_its_entry_point(tester: pytest.Pytester) -> None:
    result = tester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.winhv_vmbus_version(*versions*",
                                 "@pytest.mark.winhv_seed(n)*"])
    result = tester.runpytest("--fixtures")
    result.stdout.fnmatch_lines(["winhv_mock -- *", "winhv_vm_factory -- *", "winhv_vm -- *",
                                 "winhv_harness -- *"])


def test_fixtures_give_a_booted_host_a_connected_vm_and_a_harness(
        tester: pytest.Pytester) -> None:
    tester.makepyfile('''
        import pytest
        from conftest import UpperVsc, UpperVsp


        def test_mock(winhv_mock):
            assert winhv_mock.vms == {}
            assert winhv_mock.bridge.tracer is not None


        def test_vm(winhv_vm, winhv_mock):
            assert winhv_vm.version is not None
            assert winhv_mock.vms[winhv_vm.name] is winhv_vm


        @pytest.mark.parametrize("winhv_vm", [{"memory_mb": 32, "name": "big",
                                               "drivers": [UpperVsc]}], indirect=True)
        def test_vm_options(winhv_vm):
            assert winhv_vm.name == "big"
            assert winhv_vm.client.drivers == [UpperVsc]


        def test_factory(winhv_vm_factory):
            a, b = winhv_vm_factory(name="a"), winhv_vm_factory(name="b", version="4.0")
            assert (a.version >> 16, b.version >> 16) == (5, 4)


        def test_real_pair(winhv_harness):
            pair = winhv_harness(UpperVsp({}), UpperVsc)
            pair.guest.request(b"abc")
            assert pair.guest.expect(payload=b"ABC").trans_id == 1
            pair.guest.expect_nothing()


        def test_fake_host(winhv_harness):
            pair = winhv_harness(vsc=UpperVsc)
            pair.host.respond(b"ping", b"pong")
            pair.vsc.channel.send_request(b"ping", None)
            assert pair.host.expect(payload=b"ping")
            assert pair.guest.expect(payload=b"pong")


        def test_fake_guest(winhv_harness):
            pair = winhv_harness(UpperVsp({}))
            pair.guest.request(b"xyz")
            assert pair.guest.expect(payload=b"XYZ")
    ''')
    tester.runpytest("-q").assert_outcomes(passed=7)


def test_version_marker_runs_the_test_once_per_version(tester: pytest.Pytester) -> None:
    tester.makepyfile('''
        import pytest
        from conftest import UpperVsc, UpperVsp


        @pytest.mark.winhv_vmbus_version("4.0", "5.0", "WIN10_V5_3")
        def test_pinned(winhv_harness, winhv_vmbus_version):
            pair = winhv_harness(UpperVsp({}), UpperVsc)
            assert pair.vm.version == winhv_vmbus_version


        @pytest.mark.winhv_vmbus_version(min="5.1", max="5.3")
        def test_range(winhv_vm, winhv_vmbus_version):
            assert winhv_vm.version == winhv_vmbus_version


        def test_unmarked(winhv_vmbus_version):
            assert winhv_vmbus_version is None
    ''')
    result = tester.runpytest("-v")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["*test_pinned?vmbus5.3? PASSED*", "*test_pinned?vmbus4.0? PASSED*",
                                 "*test_range?vmbus5.1? PASSED*"])


def test_unknown_version_is_a_usage_error(tester: pytest.Pytester) -> None:
    tester.makepyfile('''
        import pytest

        @pytest.mark.winhv_vmbus_version("9.9")
        def test_x(winhv_vm):
            pass
    ''')
    result = tester.runpytest()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*winhv_vmbus_version: unknown version '9.9'; known: 0.13,*"])


def test_a_malformed_seed_marker_is_a_usage_error(tester: pytest.Pytester) -> None:
    tester.makepyfile('''
        import pytest

        @pytest.mark.winhv_seed()
        def test_none(winhv_mock):
            pass

        @pytest.mark.winhv_seed("12")
        def test_text(winhv_mock):
            pass

        @pytest.mark.winhv_seed(12)
        def test_fine(winhv_mock):
            assert winhv_mock.seed == 12
    ''')
    result = tester.runpytest()
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines([
        "*winhv_seed: found (), expected one non-negative integer: @pytest.mark.winhv_seed(1234)",
        "*winhv_seed: found ('12',), expected one non-negative integer*",
    ])


def test_a_failing_expect_says_what_arrived_and_shows_the_trace(tester: pytest.Pytester) -> None:
    tester.makepyfile('''
        import pytest
        from conftest import UpperVsc, UpperVsp


        @pytest.mark.winhv_seed(1234)
        def test_wrong_reply(winhv_harness):
            pair = winhv_harness(UpperVsp({}), UpperVsc)
            pair.guest.request(b"hello")
            pair.guest.expect(payload=b"hello")
    ''')
    result = tester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        '>       pair.guest.expect(payload=b"hello")',   # the user's line, not the plugin's
        "E   *ExpectationFailed: guest end of vm0/relid 1: expected a packet with "
        "payload=b'hello'",
        "E *arrived and not yet expected: 1 packet(s)",
        "E *COMP tid=1 payload=b'HELLO\\x00\\x00\\x00'",
        "E *channel: open",
        "E *recent winhv trace (seed 1234, t=0 ns):",
        "E *packet  vm0 guest->host sent relid=1 DATA_INBAND tid=1 b'hello'",
        "*winhv trace (seed 1234; replay: --winhv-seed 1234)*",
        "*message vm0 host->guest sent OPENCHANNEL_RESULT relid=1",
    ])


def test_faults_replay_with_the_seed_option(tester: pytest.Pytester) -> None:
    tester.makepyfile('''
        import pytest
        from conftest import UpperVsc, UpperVsp


        def test_flaky_signals(winhv_harness, winhv_mock):
            pair = winhv_harness(UpperVsp({}), UpperVsc)
            winhv_mock.duplicate("signal", probability=0.5, count=None)
            for n in range(12):
                pair.guest.request(bytes([65 + n]))
                pair.guest.expect(type=11)
            pattern = "".join("D" if s.fault else "." for s in winhv_mock.signals())
            with open("pattern.txt", "a") as out:
                out.write(f"{winhv_mock.seed} {pattern}\\n")
    ''')
    for seed in ("5", "5", "6"):
        tester.runpytest("--winhv-seed", seed).assert_outcomes(passed=1)
    first, second, other = (tester.path / "pattern.txt").read_text().split("\n")[:3]
    assert first == second
    assert first.startswith("5 ")
    assert first[2:] != other[2:]


def test_crash_fault_is_contained_and_reported(tester: pytest.Pytester) -> None:
    tester.makepyfile('''
        from conftest import UpperVsc, UpperVsp


        def test_crash(winhv_harness, winhv_mock):
            pair = winhv_harness(UpperVsp({}), UpperVsc)
            winhv_mock.crash(pair.vsp, "on_packet")
            pair.guest.request(b"boom")
            pair.guest.expect_nothing()
            assert pair.host.channel.closed
            winhv_mock.assert_no_errors()
    ''')
    result = tester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "E   *MockError: expected no errors, found *:",
        "E *vm0: device: channel closed: driver raised InjectedFault: injected crash in "
        "UpperVsp.on_packet",
        "*fault   crash in UpperVsp.on_packet (call 1)",
    ])


def test_importing_the_plugin_loads_no_core_module() -> None:
    code = textwrap.dedent('''
        import sys
        import winhv.plugins.pytest_plugin
        heavy = [m for m in sys.modules if m.startswith(("winhv.drivers", "winhv.plugins.testing",
                                                         "winhv.plugins._"))]
        print(heavy)
    ''')
    # -P: not the source checkout in the working directory (it has no compiled extensions)
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


#: One inner test per fault kind of issue #5, through the fixtures, each asserting the effect.
FAULTS = '''
import pytest
from conftest import UPPER_IF, UpperVsc, UpperVsp


class TalkVsc(UpperVsc):
    def on_packet(self, channel, packet):
        self.got = bytes(packet.payload)


def test_fail_a_hypercall_code_with_a_status_n_times(winhv_mock):
    winhv_mock.fail_hypercall("HvCallPostMessage", "INSUFFICIENT_BUFFERS", count=2)
    vm = winhv_mock.vm()
    statuses = [c.status.name for c in winhv_mock.calls("HvCallPostMessage", caller=vm.name)]
    assert statuses[:3] == ["INSUFFICIENT_BUFFERS", "INSUFFICIENT_BUFFERS", "SUCCESS"]
    assert vm.version is not None and winhv_mock.now > 0   # retried on the virtual clock


def test_drop_a_message(winhv_vm_factory, winhv_mock):
    vm = winhv_vm_factory([UpperVsc])
    fault = winhv_mock.drop("message", type="OPENCHANNEL_RESULT")
    vm.offer(UpperVsp({}), name="up")
    assert fault.fired == 1
    assert vm.device("up").state.value == "opening"
    assert not winhv_mock.messages("OPENCHANNEL_RESULT", stage="received")


def test_delay_a_message(winhv_mock):
    winhv_mock.delay("message", 50_000, type="VERSION_RESPONSE")
    winhv_mock.vm()
    sent = winhv_mock.messages("VERSION_RESPONSE")[0]
    got = winhv_mock.messages("VERSION_RESPONSE", stage="received")[0]
    assert (sent.fault, got.time_ns - sent.time_ns) == ("delayed", 50_000)


def test_duplicate_a_message(winhv_vm_factory, winhv_mock):
    vm = winhv_vm_factory([UpperVsc])
    winhv_mock.duplicate("message", type="OFFERCHANNEL")
    vm.offer(UpperVsp({}), name="up")
    assert len(winhv_mock.messages("OFFERCHANNEL", stage="received")) == 2
    assert any("not already offered" in e for e in vm.errors())
    assert vm.device("up").state.value == "open"


def test_reorder_messages(winhv_mock):
    vm = winhv_mock.vm([UpperVsc], connect=False)
    vm.server.add_device("up", UpperVsp({}), UPPER_IF)
    winhv_mock.reorder("message", type="OFFERCHANNEL")
    vm.client.connect()
    winhv_mock.settle()
    received = [r.name for r in winhv_mock.messages(direction="to_guest", stage="received")]
    assert received[1:3] == ["ALLOFFERS_DELIVERED", "OFFERCHANNEL"]
    assert vm.device("up").state.value == "open"


def test_drop_a_signal(winhv_harness, winhv_mock):
    pair = winhv_harness(UpperVsp({}), UpperVsc)
    winhv_mock.drop("signal", direction="to_host")
    pair.guest.request(b"lost")
    pair.guest.expect_nothing()
    assert [s.fault for s in winhv_mock.signals(direction="to_host")] == ["dropped"]


def test_delay_a_signal(winhv_harness, winhv_mock):
    pair = winhv_harness(UpperVsp({}), UpperVsc)
    winhv_mock.delay("signal", 30_000, direction="to_host")
    start = winhv_mock.now
    pair.guest.request(b"late")
    assert pair.guest.expect(payload=b"LATE").time_ns - start == 30_000


def test_duplicate_a_signal(winhv_harness, winhv_mock):
    pair = winhv_harness(UpperVsp({}), UpperVsc)
    winhv_mock.duplicate("signal", count=None)
    pair.guest.request(b"once")
    assert pair.guest.expect(payload=b"ONCE")
    pair.guest.expect_nothing()
    assert [s.fault for s in winhv_mock.signals()] == ["duplicated", "duplicated"]


def test_reorder_signals(winhv_harness, winhv_mock):
    pair = winhv_harness(UpperVsp({}), UpperVsc)
    winhv_mock.reorder("signal", direction="to_host", delay_ns=20_000)
    start = winhv_mock.now
    pair.guest.request(b"held")
    # nothing else was sent on that stream, so the held signal goes after its timeout
    assert pair.guest.expect(payload=b"HELD").time_ns - start == 20_000
    assert winhv_mock.signals(direction="to_host")[0].fault == "reordered"


def test_corrupt_a_ring_index(winhv_harness, winhv_mock):
    pair = winhv_harness(UpperVsp({}), UpperVsc)
    winhv_mock.corrupt_ring(pair.guest.channel, "write_index", 0x7FFF_FFF8)
    assert "write_index" in pair.host.channel.close_reason
    assert pair.device.state.value == "removed"     # the host withdrew the broken device


def test_corrupt_the_interrupt_mask_silences_the_writer(winhv_harness, winhv_mock):
    pair = winhv_harness(UpperVsp({}), UpperVsc)
    winhv_mock.corrupt_ring(pair.guest.channel, "interrupt_mask", 1)
    pair.guest.request(b"quiet")
    pair.guest.expect_nothing()
    assert not winhv_mock.signals(direction="to_host")


def test_fill_a_ring(winhv_harness, winhv_mock):
    pair = winhv_harness(UpperVsp({}), UpperVsc)
    assert winhv_mock.fill_ring(pair.guest.channel) > 0
    pair.guest.request(b"after")
    assert pair.guest.channel.backlog == 1
    assert pair.guest.expect(payload=b"AFTER")
    assert pair.guest.channel.backlog == 0


@pytest.mark.parametrize("step", ["GPADL_HEADER", "OPENCHANNEL", "OPENCHANNEL_RESULT"])
def test_rescind_at_a_protocol_step(winhv_vm_factory, winhv_mock, step):
    vm = winhv_vm_factory([UpperVsc])
    fault = vm.rescind_at(step, device="up")
    vm.server.add_device("up", UpperVsp({}), UPPER_IF)
    winhv_mock.settle()
    assert fault.fired == 1
    assert vm.tree() == []
    assert winhv_mock.expect_message("RESCIND_CHANNELOFFER").relid == 1


def test_crash_a_vsp_callback(winhv_harness, winhv_mock):
    pair = winhv_harness(UpperVsp({}), UpperVsc)
    other = winhv_harness(UpperVsp({}), UpperVsc, vm=pair.vm, name="other")
    winhv_mock.crash(pair.vsp, "on_packet")
    pair.guest.request(b"boom")
    pair.guest.expect_nothing()
    assert "InjectedFault" in pair.host.channel.close_reason
    other.guest.request(b"fine")
    assert other.guest.expect(payload=b"FINE")


def test_crash_a_vsp_on_close_is_recorded(winhv_harness, winhv_mock):
    pair = winhv_harness(UpperVsp({}), UpperVsc)
    winhv_mock.crash(pair.vsp, "on_close")
    pair.rescind()
    assert pair.host_device.errors == ["on_close: injected crash in UpperVsp.on_close"]
    assert pair.device.state.value == "removed"


@pytest.mark.parametrize("method", ["probe", "on_open"])
def test_crash_a_vsc_while_binding(winhv_vm_factory, winhv_mock, method):
    winhv_mock.crash(UpperVsc, method)
    vm = winhv_vm_factory([UpperVsc])
    vm.offer(UpperVsp({}), name="up")
    assert vm.device("up").state.value == "failed"
    assert f"injected crash in UpperVsc.{method}" in vm.device("up").error


def test_crash_a_vsc_on_packet(winhv_harness, winhv_mock):
    pair = winhv_harness(UpperVsp({}), TalkVsc)
    winhv_mock.crash(pair.vsc, "on_packet")
    pair.host.send(b"hi")
    pair.settle()
    assert pair.device.state.value == "failed"
    assert "TalkVsc.on_packet" in pair.guest.channel.close_reason


def test_crash_names_the_callbacks_a_driver_has(winhv_mock):
    with pytest.raises(ValueError, match="found 'on_close', expected a callback of UpperVsc: "
                       "one of probe, on_open, on_packet, remove"):
        winhv_mock.crash(UpperVsc, "on_close")
'''


def test_every_fault_kind_through_the_fixtures(tester: pytest.Pytester) -> None:
    tester.makepyfile(test_faults=FAULTS)
    result = tester.runpytest("-q")
    result.assert_outcomes(passed=21)


def test_a_failing_expect_nothing_and_expect_message_show_what_arrived(
        tester: pytest.Pytester) -> None:
    tester.makepyfile('''
        from conftest import UpperVsc, UpperVsp


        def test_unexpected_reply(winhv_harness):
            pair = winhv_harness(UpperVsp({}), UpperVsc)
            pair.guest.request(b"hi")
            pair.guest.expect_nothing()


        def test_missing_message(winhv_vm, winhv_mock):
            winhv_mock.expect_message("RESCIND_CHANNELOFFER", vm=winhv_vm.name)
    ''')
    result = tester.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        ">       pair.guest.expect_nothing()",
        "E   *ExpectationFailed: guest end of vm0/relid 1: expected no further packet",
        "E *arrived and not yet expected: 1 packet(s)",
        "E *COMP tid=1 payload=b'HI\\x00*",
        ">       winhv_mock.expect_message(\"RESCIND_CHANNELOFFER\", vm=winhv_vm.name)",
        "E   *MockError: expected a RESCIND_CHANNELOFFER message on vm0, none was sent",
        "E *recent winhv trace (seed *",
        "E *message vm0 host->guest sent ALLOFFERS_DELIVERED",
    ])
