/* The one translation unit that holds the implementation for every test binary. */
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
