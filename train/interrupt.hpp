// A request to stop training, made by SIGINT or SIGTERM (or by the program): the Trainer polls it
// after each step, saves a checkpoint and returns. A second signal kills at once, which is still
// safe: a save is committed by one marker or not at all (checkpoint.hpp).
#pragma once

namespace latent::train {

// Routes SIGINT and SIGTERM to request_interrupt() (once; the next such signal has its default effect).
void install_interrupt_handler();
void request_interrupt();     // async-signal-safe
bool interrupt_requested();
void clear_interrupt_request();

}  // namespace latent::train
