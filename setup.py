"""Builds ``dsconv_ext._C``.

* C++ CPU sources (``csrc/*.cpp``, ``csrc/cpu/*.cpp``) are always compiled.
* CUDA sources (``csrc/cuda/*.cu``) are compiled when ``nvcc`` is found (``CUDA_HOME`` or
  ``PATH``) or ``DSCONV_EXT_FORCE_CUDA=1``; never decided by ``torch.cuda.is_available()``,
  so a GPU-less build machine still produces a CUDA-enabled wheel.
* ``DSCONV_EXT_SKIP_BUILD=1`` builds nothing: the package then runs on the reference backend.
* ``DSCONV_EXT_CPU_ISA=auto|avx512|avx2|generic`` picks the vector ISA of the CPU kernels. The
  kernels use ATen's ``at::vec::Vectorized``, so one source becomes AVX-512 or AVX2 code; ``auto``
  (default) takes the best the build machine has. Build with ``avx2`` or ``generic`` for a
  binary that must run on older CPUs than the one it is built on.
"""

import glob
import os
import platform
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _nvcc_found() -> bool:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        return True
    return shutil.which("nvcc") is not None


def _cpu_flags_of_this_machine() -> set:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
               "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"],
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
    "generic": [],
}


def _cpu_isa_flags() -> list:
    isa = os.environ.get("DSCONV_EXT_CPU_ISA", "auto").strip().lower()
    if isa not in ("auto", *_ISA_FLAGS):
        raise ValueError(f"DSCONV_EXT_CPU_ISA: expected auto, avx512, avx2 or generic, got {isa!r}")
    if isa == "auto":
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return []
        flags = _cpu_flags_of_this_machine()
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
            isa = "avx512"
        elif {"avx2", "fma", "f16c"} <= flags:
            isa = "avx2"
        else:
            isa = "generic"
    print(f"dsconv_ext: building CPU kernels for {isa}")
    return _ISA_FLAGS[isa]


def _sources(pattern: str) -> list:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _extensions_and_cmdclass():
    if _flag("DSCONV_EXT_SKIP_BUILD"):
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    cpu_sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    cuda_sources = _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp")
    with_cuda = bool(cuda_sources) and (_flag("DSCONV_EXT_FORCE_CUDA") or _nvcc_found())
    debug = _flag("DSCONV_EXT_DEBUG")
    cxx_flags = ["-O0", "-g"] if debug else ["-O3"]
    cxx_flags += ["-fopenmp"] + _cpu_isa_flags()
    define_macros = [("Py_LIMITED_API", "0x03090000")]
    extra = {"cxx": cxx_flags}
    if with_cuda:
        define_macros.append(("DSCONV_EXT_WITH_CUDA", None))
        extra["nvcc"] = ["-O3", "--use_fast_math", "-lineinfo"]
        ext = CUDAExtension(
            "dsconv_ext._C",
            cpu_sources + cuda_sources,
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
            define_macros=define_macros,
            py_limited_api=True,
        )
    else:
        ext = CppExtension(
            "dsconv_ext._C",
            cpu_sources,
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
            define_macros=define_macros,
            py_limited_api=True,
        )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = _extensions_and_cmdclass()

setup(
    packages=find_packages(include=["dsconv_ext", "dsconv_ext.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp39"}} if ext_modules else {},
)
