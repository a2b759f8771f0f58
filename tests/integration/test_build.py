#!/usr/bin/env python3
"""The build enforces the architecture (src/meson.build): each module has a
unit test, which links its module's library and nothing compiled beside it,
libconfig comes only with the configuration module and libsystemd only with
logging, notification and listening; the strict warnings are the project's
default. Read from the
build's own commands (ninja -t commands) and from meson introspect, not from
meson.build's text."""
import glob
import json
import os
import re
import shlex
import shutil
import subprocess

from harness import Skip, main

ROOT = os.environ.get("ECHO_MPSERV_SOURCE_ROOT", "")
BUILD = os.environ.get("ECHO_MPSERV_BUILD_ROOT", "")

# The modules that wrap each external library; any other module that needs
# one must get it through them.
WRAPS = {"libconfig": {"config"}, "libsystemd": {"log", "notify", "listen"}}


def ninja():
    exe = shutil.which("ninja") or shutil.which("ninja-build")
    if not exe or not BUILD:
        raise Skip("ninja or the build directory not available")
    return exe


def link_line(target):
    out = subprocess.run([ninja(), "-C", BUILD, "-t", "commands", target], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()
    return shlex.split(out[-1])


def unit_tests():
    tests = sorted(os.path.basename(p)[len("test-"):-len(".c")]
                   for p in glob.glob(os.path.join(ROOT, "tests", "unit", "test-*.c")))
    assert len(tests) >= 15, tests
    return tests


def test_each_unit_test_links_its_module_alone():
    for name in unit_tests():
        args = link_line(f"tests/unit/test-{name}")
        objects = [a for a in args if a.endswith(".o")]
        modules = [m.group(1) for a in args if (m := re.fullmatch(r".*/libmod-([a-z-]+)\.a", a))]
        assert objects == [f"tests/unit/test-{name}.p/test-{name}.c.o"], (name, objects)
        assert modules and modules[0] == name, (name, modules)
        for lib, wrappers in WRAPS.items():
            linked = any(re.search(rf"/{lib}\.(so|a)$|^-l{lib[3:]}$", a) for a in args)
            assert linked == bool(wrappers & set(modules)), (name, lib, modules)


def test_every_module_has_its_unit_test():
    if not BUILD:
        raise Skip("the build directory not available")
    targets = json.loads(subprocess.run(["meson", "introspect", BUILD, "--targets"], capture_output=True, text=True,
                                        check=True).stdout)
    modules = {t["name"][len("mod-"):] for t in targets if t["type"] == "static library"
               and t["name"].startswith("mod-")}
    assert len(modules) >= 15, modules
    assert not modules - set(unit_tests()), f"modules without a unit test: {sorted(modules - set(unit_tests()))}"


def test_only_the_wrapping_modules_compile_against_external_headers():
    # A module outside WRAPS that includes <libconfig.h> or <systemd/...>
    # would have to be given the dependency: none is.
    for src in glob.glob(os.path.join(ROOT, "src", "*.[ch]")):
        base = os.path.basename(src)
        with open(src) as f:
            text = f.read()
        if re.search(r"#include <libconfig\.h>", text):
            assert base.startswith("config"), base
        if re.search(r"#include <systemd/", text):
            assert base.split(".")[0] in WRAPS["libsystemd"], base


def test_strict_warnings_are_the_default():
    opts = json.loads(subprocess.run(["meson", "introspect", "--buildoptions", os.path.join(ROOT, "meson.build")],
                                     capture_output=True, text=True, check=True).stdout)
    defaults = {o["name"]: o["value"] for o in opts}
    assert defaults["warning_level"] == "3" and defaults["werror"] is True, \
        (defaults["warning_level"], defaults["werror"])
    out = subprocess.run([ninja(), "-C", BUILD, "-t", "commands", "src/echo-mpserv"], capture_output=True,
                         text=True, check=True).stdout
    compile_main = next(line for line in out.splitlines() if re.search(r" -c \S*src/main\.c$", line))
    for flag in ("-Wvla", "-Wimplicit-fallthrough", "-Wconversion", "-Wpedantic"):
        assert flag in compile_main.split(), (flag, compile_main)
    assert "-Wno-unused-parameter" not in compile_main, compile_main


if __name__ == "__main__":
    main([test_each_unit_test_links_its_module_alone, test_every_module_has_its_unit_test,
          test_only_the_wrapping_modules_compile_against_external_headers,
          test_strict_warnings_are_the_default])
