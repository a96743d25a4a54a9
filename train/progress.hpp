// The progress display of a training run on stderr: a bar redrawn in place when stderr is a
// terminal, else one plain line per logged step (what a log file or a test reads).
#pragma once
#include <cstdint>
#include <string>

namespace latent::train {

class Progress {
 public:
  Progress();
  void show(const std::string& line, int64_t step, int64_t steps);
  // Ends a bar drawn without its newline, so the next output starts on a line of its own.
  void end_line();

 private:
  bool tty_;
  bool line_open_ = false;
};

// "4m05s", or "1h02m" from an hour on.
std::string format_duration(double seconds);

}  // namespace latent::train
