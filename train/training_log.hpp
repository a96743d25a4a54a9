// Training metrics a person can read: metrics.csv (one row per logged step) and loss.svg (train and
// validation loss against step), both rewritten atomically at each save.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace latent::train {

class TrainingLog {
 public:
  // Columns after the fixed leading "step,loss,val_loss,lr,tokens_per_s".
  explicit TrainingLog(std::vector<std::string> extra_columns = {});

  // One row; missing values (e.g. val_loss between evaluations) are written as empty cells.
  void add(int64_t step, const std::map<std::string, double>& values);
  // Reads a metrics.csv written by a previous run (for resume), keeping rows up to and including `up_to_step`.
  void load_csv(const std::string& path, int64_t up_to_step);
  void write_csv(const std::string& path) const;
  void write_svg(const std::string& path) const;

  const std::vector<std::string>& columns() const { return columns_; }
  size_t rows() const { return rows_.size(); }

 private:
  std::vector<std::string> columns_;
  std::vector<std::pair<int64_t, std::map<std::string, double>>> rows_;
};

}  // namespace latent::train
