"""Shared memory per emulated GiB (machines of 1, 16 and 64 GiB) and whether a 64 GiB machine boots."""
import time

from oomemu.bench.core import figure, in_child

GROUP = "shm"
FIGURES = {
    "shm_mib_per_gib_1": ("shared memory per emulated GiB, 1 GiB machine", "MiB", "<=", 2.0),
    "shm_mib_per_gib_16": ("shared memory per emulated GiB, 16 GiB machine", "MiB", "<=", 2.0),
    "shm_mib_per_gib_64": ("shared memory per emulated GiB, 64 GiB machine", "MiB", "<=", 2.0),
    "boot_s_64gib": ("a 64 GiB machine boots (create_machine), seconds", "s", None, None),
}


def _shm_footprint(gib, boot):
    """Child body: Machine size for a 1-node machine of `gib` GiB (16 MiB DMA + the rest Normal); boot time."""
    from oomemu.boot import create_machine
    from oomemu.config import load_scenario_text
    sc = load_scenario_text(f"""
[machine]
cpus = 2
[[machine.node]]
zones = {{ DMA = "16MiB", DMA32 = "0", Normal = "{gib * 1024 - 16}MiB" }}
""", name=f"bench-{gib}gib")
    t0 = time.perf_counter()
    m = create_machine(sc)
    boot_s = time.perf_counter() - t0
    ring = m.nr_rows_cpu * m.ring_records * 64
    return {"size": m.size, "ring": ring, "nr_pages": m.nr_pages, "boot_s": boot_s if boot else None}


# -- shared memory -------------------------------------------------------------------------------------------
def measure(bench):
    rounds = min(bench.repeats, 2 if bench.quick else 3)
    sizes = {}
    for _ in range(rounds):
        for gib in (1, 16, 64):
            sizes.setdefault(gib, []).append(in_child(_shm_footprint, gib, gib == 64))
    f = bench.figures
    for gib, res in sizes.items():
        f[f"shm_mib_per_gib_{gib}"] = figure(f"shm_mib_per_gib_{gib}", [x["size"] / 2**20 / gib for x in res])
    f["boot_s_64gib"] = figure("boot_s_64gib", [x["boot_s"] for x in sizes[64]])
    one, big = sizes[1][0], sizes[64][0]
    bench.details["shm"] = {
        "bytes": {str(g): s[0]["size"] for g, s in sizes.items()},
        "trace_ring_bytes": one["ring"],
        "marginal_mib_per_gib": round((big["size"] - one["size"]) / 2**20 / 63, 3),
        "bytes_per_page": round((big["size"] - one["size"]) / (big["nr_pages"] - one["nr_pages"]), 3)}

