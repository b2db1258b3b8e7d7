// The store's Timestamp helpers (store/timestamp.h), for the broker's code.
#pragma once

#include "store/timestamp.h"

namespace icr::broker {

using store::MakeTimestamp;
using store::SetTimestamp;
using store::ToMicros;

}  // namespace icr::broker
