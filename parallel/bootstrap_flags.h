// Registers the bootstrap flags (BootstrapFlags) on a CLI11 app, so every
// binary that starts a rank spells them the same way.
#pragma once

#include "parallel/bootstrap.h"

namespace CLI {
class App;
}  // namespace CLI

namespace strata::parallel {

// `flags` must outlive `app`'s parsing.
void AddBootstrapFlags(CLI::App& app, BootstrapFlags* flags);

}  // namespace strata::parallel
