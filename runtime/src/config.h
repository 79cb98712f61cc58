// The keys of the TOML config file (docs/operations.md) applied to HostOptions; hostMain reads
// the file, the config fuzz target feeds it any text.
#pragma once

#include <toml++/toml.h>

#include "dohost/host.h"

namespace dohost {

// Bad configuration throws std::runtime_error; its message is the one line hostMain prints.
void applyConfig(const toml::table& config, HostOptions& options);

}  // namespace dohost
