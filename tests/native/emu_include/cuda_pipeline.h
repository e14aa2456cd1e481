// The emulator stands in for this CUDA header: the pipeline primitives are in cuda_emu.h.
#pragma once
#include "cuda_emu.h"
