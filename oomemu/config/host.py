"""What a scenario asks of the host it runs on, checked before anything starts.

The emulated pages are not host memory, but every page frame costs the shared segment 16 bytes and the
end-of-run check and machine.npz as much again; a machine of a terabyte boots for a minute and needs gigabytes.
A scenario whose estimated footprint exceeds HOST_FRACTION of the host's RAM is refused with the figures
(exit 2), unless the user asks for it (`oomemu run --allow-large`).
"""
from oomemu.errors import ScenarioError

PAGE_SIZE = 4096
BYTES_PER_PAGE = 16            # page_next, page_prev, page_owner (4 each) + kind, flags, order, zone (1 each)
RING_RECORD = 64
HOST_FRACTION = 1 / 8


def segment_estimate(scenario):
    """Bytes of the shared segment `scenario` boots (page frame table and trace rings dominate)."""
    mc = scenario.machine
    pages = sum(size // PAGE_SIZE for node in mc.nodes for size in node.zones.values())
    tasks = max(mc.max_tasks, 2 + len(mc.nodes) + sum(t.count for t in scenario.tasks))
    rows = mc.cpus + len(mc.nodes)
    ring = 1
    if scenario.run.trace:
        need = tasks + 4096
        ring = max(1 << 16, 1 << (need - 1).bit_length())
    return pages * BYTES_PER_PAGE + rows * ring * RING_RECORD + tasks * 512


def host_memory():
    try:
        import psutil
        return psutil.virtual_memory().total
    except Exception:  # noqa: BLE001 - no way to know: no cap
        return None


def check_fits_host(scenario, allow_large=False, total=None):
    """Raise ScenarioError if the machine's footprint (segment, and as much again to check and save it)
    exceeds HOST_FRACTION of the host's memory and `allow_large` is not set."""
    total = host_memory() if total is None else total
    if allow_large or not total:
        return
    seg = segment_estimate(scenario)
    need = 2 * seg
    cap = int(total * HOST_FRACTION)
    if need <= cap:
        return
    emulated = sum(size for node in scenario.machine.nodes for size in node.zones.values())
    raise ScenarioError(
        f"machine.node: {emulated / (1 << 30):.1f} GiB of emulated memory needs about {need / (1 << 30):.1f} GiB "
        f"of host memory (a {seg / (1 << 30):.1f} GiB shared segment and as much again to check and save it); "
        f"the cap is 1/{round(1 / HOST_FRACTION)} of this host's {total / (1 << 30):.1f} GiB "
        f"({cap / (1 << 30):.1f} GiB): make the machine smaller or pass --allow-large", path="machine.node")
