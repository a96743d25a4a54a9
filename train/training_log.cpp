// CSV and SVG rendering of the training log.
#include "training_log.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include <fmt/format.h>

#include "../core/error.hpp"
#include "../io/atomic_file.hpp"

namespace latent::train {

TrainingLog::TrainingLog(std::vector<std::string> extra) : columns_{"step", "loss", "val_loss", "lr", "tokens_per_s"} {
  columns_.insert(columns_.end(), extra.begin(), extra.end());
}

void TrainingLog::add(int64_t step, const std::map<std::string, double>& values) {
  for (const auto& [key, _] : values)
    if (std::find(columns_.begin(), columns_.end(), key) == columns_.end())
      fail("TrainingLog: unknown column '{}'", key);
  rows_.emplace_back(step, values);
}

void TrainingLog::load_csv(const std::string& path, int64_t up_to_step) {
  std::ifstream in(path);
  if (!in) return;  // a checkpoint saved before any logged step has no metrics yet
  std::string line;
  std::getline(in, line);
  std::vector<std::string> header;
  {
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) header.push_back(cell);
  }
  if (header != columns_) fail("TrainingLog: {} has columns '{}' that this run does not write", path, line);
  rows_.clear();
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::map<std::string, double> values;
    int64_t step = -1;
    size_t i = 0;
    for (std::string cell; std::getline(ss, cell, ','); ++i) {
      if (i >= columns_.size()) fail("TrainingLog: {}: too many cells in '{}'", path, line);
      if (cell.empty()) continue;
      try {
        if (i == 0) step = std::stoll(cell);
        else values[columns_[i]] = std::stod(cell);
      } catch (const std::exception&) {
        fail("TrainingLog: {}: bad number '{}'", path, cell);
      }
    }
    if (step < 0) fail("TrainingLog: {}: row without a step: '{}'", path, line);
    if (step <= up_to_step) rows_.emplace_back(step, std::move(values));
  }
}

void TrainingLog::write_csv(const std::string& path) const {
  std::string out;
  for (size_t i = 0; i < columns_.size(); ++i) out += (i ? "," : "") + columns_[i];
  out += '\n';
  for (const auto& [step, values] : rows_) {
    out += std::to_string(step);
    for (size_t i = 1; i < columns_.size(); ++i) {
      out += ',';
      auto it = values.find(columns_[i]);
      if (it != values.end()) out += fmt::format("{:.6g}", it->second);
    }
    out += '\n';
  }
  io::write_file_atomic(path, out);
}

// A plain SVG line chart: axes with ticks and labels, one polyline per series, a legend.
void TrainingLog::write_svg(const std::string& path) const {
  constexpr double W = 720, H = 420, left = 70, right = 20, top = 40, bottom = 60;
  struct Series {
    const char* column;
    const char* label;
    const char* colour;
  };
  const Series series[] = {{"loss", "train loss", "#1f77b4"}, {"val_loss", "validation loss", "#d62728"}};
  double x0 = std::numeric_limits<double>::max(), x1 = std::numeric_limits<double>::lowest(), y0 = x0, y1 = x1;
  for (const auto& [step, values] : rows_)
    for (const Series& s : series)
      if (auto it = values.find(s.column); it != values.end() && std::isfinite(it->second)) {
        x0 = std::min(x0, double(step)), x1 = std::max(x1, double(step));
        y0 = std::min(y0, it->second), y1 = std::max(y1, it->second);
      }
  if (x0 > x1) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 == x0) x1 = x0 + 1;
  y0 = std::min(0.0, y0);
  if (y1 == y0) y1 = y0 + 1;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (W - left - right); };
  auto py = [&](double y) { return H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom); };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">latent training: loss per byte (nats)</text>\n",
      W, H, W / 2);
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n", left, H - bottom, W - right);
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"black\"/>\n", left, top, H - bottom);
  for (int i = 0; i <= 5; ++i) {
    const double xv = x0 + (x1 - x0) * i / 5, yv = y0 + (y1 - y0) * i / 5;
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"black\"/>"
                       "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4:.0f}</text>\n",
                       px(xv), H - bottom, H - bottom + 5, H - bottom + 20, xv);
    svg += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#ddd\"/>"
                       "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5:.2f}</text>\n",
                       left, py(yv), W - right, left - 6, py(yv) + 4, yv);
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n", (left + W - right) / 2, H - 15);
  svg += fmt::format("<text x=\"18\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {0})\">loss (nats/byte)</text>\n",
                     (top + H - bottom) / 2);
  int legend = 0;
  for (const Series& s : series) {
    std::string points;
    for (const auto& [step, values] : rows_)
      if (auto it = values.find(s.column); it != values.end() && std::isfinite(it->second))
        points += fmt::format("{:.1f},{:.1f} ", px(double(step)), py(it->second));
    if (points.empty()) continue;
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n", s.colour, points);
    const double ly = top + 8 + 18 * legend++;
    svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" stroke-width=\"2\"/>"
                       "<text x=\"{4}\" y=\"{5}\">{6}</text>\n",
                       W - right - 150, ly, W - right - 125, s.colour, W - right - 120, ly + 4, s.label);
  }
  io::write_file_atomic(path, svg + "</svg>\n");
}

}  // namespace latent::train
