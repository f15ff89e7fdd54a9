// Stand-in for CUDA's cuda_runtime.h in the host emulation build (csrc/emulation/emulation.h).
#pragma once
#include "../emulation.h"
