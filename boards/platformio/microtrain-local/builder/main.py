# microtrain-local: SCons build script of the local PlatformIO platform (docs/platformio.md).
#
# Builds the sources selected by the project's `build_src_filter` into firmware.elf with the cross
# compiler found on PATH (Debian: gcc-arm-none-eabi + libnewlib-arm-none-eabi, gcc-riscv64-unknown-elf);
# no PlatformIO package is used. Target flags come from the board manifest (boards/<id>.json,
# written from the microtrain board TOML), user flags from platformio.ini (`build_flags`,
# `build_src_flags`), the linker script from `board_build.ldscript`.
#
# Targets: default = firmware.elf + size check; `size` = `<prefix>size` of the ELF; `qemu` = run the
# ELF in QEMU with semihosting (`pio run -t qemu`). Project options read here:
#   board_build.toolchain_prefix = /opt/gcc/bin/arm-none-eabi-   another cross toolchain
#   board_build.float_abi = hard                                 hard-float ABI on FPU cores (Arm)
import os
import shutil
import subprocess
import sys

from SCons.Script import AlwaysBuild, Default, DefaultEnvironment  # pylint: disable=import-error

env = DefaultEnvironment()
board = env.BoardConfig()


def _fail(msg):
    sys.stderr.write("Error: microtrain-local: %s\n" % msg)
    env.Exit(1)


def _opt(key, default=None):
    try:
        value = board.get(key)
    except KeyError:
        return default
    return default if value in (None, "") else value


arch = _opt("build.arch", "arm")
prefix = _opt("build.toolchain_prefix", "arm-none-eabi-" if arch == "arm" else "riscv64-unknown-elf-")
path = env["ENV"].get("PATH", os.environ.get("PATH", ""))
cc_path = shutil.which(prefix + "gcc", path=path)
if not cc_path:
    pkgs = ("gcc-arm-none-eabi libnewlib-arm-none-eabi" if arch == "arm"
            else "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf")
    _fail("cross compiler '%sgcc' not found on PATH; install it (Debian: apt-get install %s) "
          "or set board_build.toolchain_prefix in platformio.ini" % (prefix, pkgs))

env.Replace(
    AR=prefix + "ar",
    AS=prefix + "gcc",
    CC=prefix + "gcc",
    CXX=prefix + "g++",
    GDB=prefix + "gdb",
    OBJCOPY=prefix + "objcopy",
    RANLIB=prefix + "ranlib",
    SIZETOOL=prefix + "size",
    ARFLAGS=["rc"],
    SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
    PROGNAME="firmware",
    PROGSUFFIX=".elf",
)

target = list(_opt("build.target_flags", []))
if str(_opt("build.float_abi", "soft")).lower() == "hard":
    hard = _opt("build.target_flags_hard")
    if not hard:
        _fail("board %s has no hard-float ABI (no FPU); remove board_build.float_abi" % env.subst("$BOARD"))
    target = list(hard)
if not target:
    _fail("board manifest %s lacks build.target_flags" % env.subst("$BOARD"))

env.Append(
    ASFLAGS=target,
    ASPPFLAGS=["-x", "assembler-with-cpp"],
    CCFLAGS=target + ["-Os", "-ffunction-sections", "-fdata-sections", "-fno-strict-aliasing"],
    CFLAGS=["-std=c99"],
    CXXFLAGS=["-fno-rtti", "-fno-exceptions"],
    LINKFLAGS=target + ["-nostartfiles", "-Wl,-Map,${BUILD_DIR}/firmware.map"],
    LIBS=["gcc"],
)
if arch == "riscv":
    env.Append(CCFLAGS=["-ffreestanding"], LINKFLAGS=["-nostdlib", "-ffreestanding"])
    # GCC emits memcpy/memset for struct copies even with -ffreestanding (at -Os it does in
    # mt_model.c); with Debian's picolibc they resolve from its libc.a (archive members are linked
    # only when referenced, so an image that needs none is unchanged). No picolibc: -lgcc only.
    specs = subprocess.run([cc_path, "-print-file-name=picolibc.specs"], capture_output=True, text=True).stdout.strip()
    if os.path.isabs(specs) and os.path.isfile(specs):
        env.Append(LINKFLAGS=["--specs=picolibc.specs"])
        env.Replace(LIBS=["c", "gcc"])
else:
    env.Append(LINKFLAGS=["--specs=nosys.specs"])


def _ld_supports(option):
    try:
        out = subprocess.run([prefix + "ld", "--help"], capture_output=True, text=True, env={"PATH": path})
    except OSError:
        return False
    return option in out.stdout


if _ld_supports("--no-warn-rwx-segments"):
    env.Append(LINKFLAGS=["-Wl,--no-warn-rwx-segments"])

# The port's linker script (board_build.ldscript, relative to the project). Without one the program
# is linked with the toolchain's default script and nothing is garbage-collected: an image to
# measure, not to run.
ldscript = env.get("LDSCRIPT_PATH")
if ldscript:
    ldscript = env.subst(ldscript)
    if not os.path.isabs(ldscript):
        ldscript = os.path.join(env.subst("$PROJECT_DIR"), ldscript)
    if not os.path.isfile(ldscript):
        _fail("linker script %s not found (board_build.ldscript)" % ldscript)
    env.Replace(LDSCRIPT_PATH=ldscript)
    env.Append(LINKFLAGS=["-Wl,--gc-sections"])
else:
    sys.stderr.write("Warning: microtrain-local: no board_build.ldscript; firmware.elf is linked with the "
                     "toolchain's default script and cannot run\n")

# ---- targets ------------------------------------------------------------------------------------
target_elf = env.BuildProgram()
AlwaysBuild(env.Alias("size", target_elf, env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE")))

qemu = _opt("qemu", {}) or {}
if qemu.get("machine"):
    cmd = [qemu.get("binary", "qemu-system-arm"), "-M", qemu["machine"]]
    if qemu.get("cpu"):
        cmd += ["-cpu", qemu["cpu"]]
    cmd += list(qemu.get("extra_args", [])) + ["-nographic", "-semihosting", "-kernel", "$SOURCE"]
    env.AddCustomTarget(
        name="qemu", dependencies=target_elf, actions=[" ".join(cmd)],
        title="Run in QEMU", description="Run firmware.elf in %s with semihosting" % qemu["machine"])

Default([target_elf])
