"""Which kernel headers bcc can find: the loader's one-line error when there are none."""

from __future__ import annotations

from spagate.gate.kernel.build import missing_kernel_headers

RELEASE = "6.1.0-28-cloud-amd64"


def ask(tmp_path, environ=None):
    return missing_kernel_headers(
        RELEASE, modules=tmp_path / "modules", kheaders=tmp_path / "kheaders.tar.xz",
        environ=environ or {}, tmp=str(tmp_path),
    )  # fmt: skip


def test_no_tree_no_kheaders_names_the_package_of_the_running_kernel(tmp_path):
    assert ask(tmp_path) == (
        f"no kernel headers for the running kernel {RELEASE} (bcc looks in "
        f"{tmp_path}/modules/{RELEASE}/build): install linux-headers-{RELEASE}"
    )
    # Another release's headers (a metapackage of another flavour) are not this kernel's.
    (tmp_path / "modules" / "6.1.0-28-amd64" / "build" / "include").mkdir(parents=True)
    assert ask(tmp_path) is not None
    # A dangling build link (headers removed, link left) is no tree either.
    (tmp_path / "modules" / RELEASE).mkdir()
    (tmp_path / "modules" / RELEASE / "build").symlink_to(tmp_path / "gone")
    assert ask(tmp_path) is not None


def test_every_place_bcc_looks_counts(tmp_path):
    tree = tmp_path / "modules" / RELEASE
    for part in ("build", "source"):
        (tree / part / "include").mkdir(parents=True)
        assert ask(tmp_path) is None, part
        (tree / part / "include").rmdir()
    assert ask(tmp_path, {"BCC_KERNEL_SOURCE": "/usr/src/linux-headers-x"}) is None
    (tmp_path / f"kheaders-{RELEASE}").mkdir()  # bcc's copy from an earlier run
    assert ask(tmp_path) is None
    (tmp_path / f"kheaders-{RELEASE}").rmdir()
    (tmp_path / "kheaders.tar.xz").write_bytes(b"")
    assert ask(tmp_path) is None
