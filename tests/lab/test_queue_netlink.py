

@pytest.mark.lab
@needs_tools
def test_a_flood_through_the_lab_fails_closed_when_its_engine_is_killed(cli_lab) -> None:
    """`fwlab up --backend netlink`, a 64-byte UDP flood through the engine, then SIGKILL to the
    supervisor and the daemon: the queue loses its listener and nothing passes any more."""
    lab = cli_lab("--backend", "netlink", "--rules", str(TEST_RULES / "open.fw"))
    status = lab.status()
    assert status["daemon"]["backend"] == "netlink"
    handle = lab.handle
    srv = handle.exec("server", ["iperf3", "-s", "-1", "-B", "203.0.113.10"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    flood = None
    try:
        time.sleep(0.5)
        flood = handle.exec("client", ["iperf3", "-c", "203.0.113.10", "-u", "-b", "0", "-l",
                                       "64", "-t", "4"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        assert _udp_received(handle) > 100
        os.kill(int(status["supervisor"]["supervisor_pid"]), signal.SIGKILL)  # this lab's own
        os.kill(int(status["daemon"]["pid"]), signal.SIGKILL)  # (it dies with it anyway)
        time.sleep(0.5)
        after_kill = _udp_received(handle)
        time.sleep(1.0)
        assert _udp_received(handle) == after_kill
    finally:
        for proc in (flood, srv):
            if proc is not None:
                proc.kill()
                proc.wait(timeout=5)
