"""Package discovery, the one thing pyproject.toml cannot say: every package under ipt_edge/, and
every package under export/ shipped as ipt_edge_export (a folder renamed on install). A new
sub-package is found without editing anything; CI checks every module is in the wheel."""

from setuptools import find_packages, setup

runtime = find_packages(include=["ipt_edge", "ipt_edge.*"])
export = ["ipt_edge_export" + name[len("export") :] for name in find_packages(include=["export", "export.*"])]
setup(packages=runtime + export, package_dir={"ipt_edge_export": "export"})
