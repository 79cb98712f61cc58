#include "objects/register_all.h"
