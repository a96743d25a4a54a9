// Whether differentiable ops record graph nodes on this thread; NoGradGuard turns recording off (RAII, nests).
#pragma once

namespace latent {

struct GradMode {
  static bool is_enabled();
  static void set_enabled(bool on);
};

struct NoGradGuard {
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace latent
