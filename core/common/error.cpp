#include "core/common/error.h"
// Anchor for the vtable of kvx::Error.
