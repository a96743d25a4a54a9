// The interrupt request: one sig_atomic_t, the only state a signal handler may set.
#include "interrupt.hpp"

#include <signal.h>

namespace latent::train {

namespace {

volatile sig_atomic_t interrupt_flag = 0;

void on_signal(int) { request_interrupt(); }

}  // namespace

void install_interrupt_handler() {
  struct sigaction action = {};
  action.sa_handler = on_signal;
  action.sa_flags = SA_RESETHAND;  // a second signal kills
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

void request_interrupt() { interrupt_flag = 1; }
bool interrupt_requested() { return interrupt_flag != 0; }
void clear_interrupt_request() { interrupt_flag = 0; }

}  // namespace latent::train
