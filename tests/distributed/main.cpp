// Catch2 entry point for tests run by mpirun: joins the MPI job before any test and runs every test on
// every rank in the same order (the tests call collectives, which all ranks must reach together).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <latent/latent.hpp>

#include "distributed/distributed.hpp"

int main(int argc, char** argv) {
  try {
    latent::distributed::ProcessGroup::world();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  latent::set_num_threads(1);  // one core per rank: the suite runs two ranks on a shared machine
  return Catch::Session().run(argc, argv);
}
