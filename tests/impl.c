/* The one translation unit that holds the implementation of every library header for the tests. */
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include "antibody_gpt.h"
#include "antibody_defence.h"
