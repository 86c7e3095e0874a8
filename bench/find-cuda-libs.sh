#!/usr/bin/env bash
# Sourced by bench/gpu-check.sh: finds the NVIDIA driver (libcuda), NVRTC
# and cuBLAS on this machine and puts their directories on LD_LIBRARY_PATH,
# so that fairgrid (which loads them at run time) finds the same ones
# PyTorch uses. CUDA 13 first, then 12. Looks in, in order:
#   python3's site-packages nvidia/*/lib (the pip wheels PyTorch pulls in),
#   /usr/local/cuda*/lib64 and targets/*/lib (newest first),
#   /usr/local/nvidia/lib64 (containers), the ldconfig cache.
# Prints one line per library: where it was found, or that it was not.

cuda_lib_dirs() {
    local py_dirs
    py_dirs=$(python3 - 2>/dev/null <<'PY'
import site, sys, os
dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
try:
    import nvidia
    dirs += [os.path.dirname(p) for p in nvidia.__path__]
except Exception:
    pass
try:
    import torch
    dirs.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
except Exception:
    pass
print("\n".join(d for d in dict.fromkeys(dirs) if os.path.isdir(d)))
PY
)
    local d
    for d in $py_dirs; do
        ls -d "$d"/nvidia/cu13/lib "$d"/nvidia/*/lib "$d"/torch/lib "$d" 2>/dev/null
    done
    ls -d /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib 2>/dev/null | sort -rV
    ls -d /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib 2>/dev/null
}

# find_cuda_lib NAME... : the first path of any NAME in the dirs above, or
# in the ldconfig cache.
find_cuda_lib() {
    local name dir
    for name in "$@"; do
        for dir in $CUDA_SEARCH_DIRS; do
            if [ -e "$dir/$name" ]; then
                echo "$dir/$name"
                return 0
            fi
        done
        local cached
        cached=$(ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n { print $NF; exit }')
        if [ -n "$cached" ]; then
            echo "$cached"
            return 0
        fi
    done
    return 1
}

CUDA_SEARCH_DIRS=$(cuda_lib_dirs | awk '!seen[$0]++' | tr '\n' ' ')
CUDA_LIBS_MISSING=""
for spec in "driver:libcuda.so.1:libcuda.so" \
            "nvrtc:libnvrtc.so.13:libnvrtc.so.12:libnvrtc.so" \
            "nvrtc-builtins:libnvrtc-builtins.so.13.0:libnvrtc-builtins.so.13.1:libnvrtc-builtins.so.13.2:libnvrtc-builtins.so" \
            "cublas:libcublas.so.13:libcublas.so.12:libcublas.so" \
            "cublasLt:libcublasLt.so.13:libcublasLt.so.12:libcublasLt.so"; do
    what=${spec%%:*}
    names=${spec#*:}
    # shellcheck disable=SC2086
    if path=$(find_cuda_lib ${names//:/ }); then
        dir=$(dirname "$(readlink -f "$path")")
        echo "found $what: $path"
        case ":${LD_LIBRARY_PATH:-}:" in
            *":$dir:"*) ;;
            *) export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
        esac
        # The unresolved directory too: sonames may only exist there.
        sdir=$(dirname "$path")
        case ":${LD_LIBRARY_PATH:-}:" in
            *":$sdir:"*) ;;
            *) export LD_LIBRARY_PATH="$sdir:$LD_LIBRARY_PATH" ;;
        esac
    else
        echo "NOT FOUND $what (looked for ${names//:/, })"
        CUDA_LIBS_MISSING="$CUDA_LIBS_MISSING $what"
    fi
done
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
