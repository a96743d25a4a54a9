// The layering rule, checked from the sources: every `#include "..."` of a library folder resolves to
// a folder that folder may include (core <- autograd <- nn <- optim <- models <- train <- examples,
// io beside core, tokenizer on io, distributed beside optim); and a planted violation is caught.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "../programs.hpp"

namespace fs = std::filesystem;

namespace {

// Each layer folder and the folders its files may include.
const std::map<std::string, std::set<std::string>>& allowed_includes() {
  static const std::map<std::string, std::set<std::string>> rules = [] {
    const std::set<std::string> below_models = {"core", "io", "tokenizer", "autograd", "nn", "optim", "distributed"};
    std::set<std::string> models = below_models, train = below_models, examples = below_models;
    models.insert("models");
    train.insert({"models", "train"});
    examples.insert({"models", "train", "examples"});
    return std::map<std::string, std::set<std::string>>{
        {"core", {"core"}},
        {"io", {"core", "io"}},
        {"tokenizer", {"core", "io", "tokenizer"}},
        {"autograd", {"core", "autograd"}},
        {"nn", {"core", "io", "autograd", "nn"}},
        {"optim", {"core", "io", "autograd", "nn", "optim"}},
        {"distributed", {"core", "io", "autograd", "distributed"}},
        {"models", models},
        {"train", train},
        {"examples", examples},
    };
  }();
  return rules;
}

std::string joined(const std::set<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// The top-level folder of `path` under `root`, or "" when the path lies outside the tree.
std::string top_folder(const fs::path& root, const fs::path& path) {
  const fs::path relative = path.lexically_normal().lexically_relative(root);
  if (relative.empty() || *relative.begin() == "..") return "";
  return relative.has_parent_path() ? relative.begin()->string() : std::string();
}

// One line per include that breaks the rules, "<file>:<line>: <what>". An include is resolved against
// the including file's folder, then against the source root; one that resolves to neither is a
// header of another project (or generated) and is not judged.
std::vector<std::string> layering_violations(const fs::path& root_in) {
  const fs::path root = fs::weakly_canonical(root_in);
  const std::regex include(R"(^\s*#\s*include\s*"([^"]+)\")");
  std::vector<std::string> found;
  for (const auto& [layer, allowed] : allowed_includes()) {
    if (!fs::is_directory(root / layer)) continue;
    for (const fs::directory_entry& entry : fs::recursive_directory_iterator(root / layer)) {
      const std::string ext = entry.path().extension().string();
      if (!entry.is_regular_file() || (ext != ".hpp" && ext != ".cpp")) continue;
      std::ifstream in(entry.path());
      std::string line;
      for (int number = 1; std::getline(in, line); ++number) {
        std::smatch match;
        if (!std::regex_search(line, match, include)) continue;
        const fs::path name = match[1].str();
        fs::path target;
        for (const fs::path& candidate : {entry.path().parent_path() / name, root / name})
          if (fs::exists(candidate)) {
            target = fs::weakly_canonical(candidate);
            break;
          }
        if (target.empty()) continue;
        const std::string folder = top_folder(root, target);
        if (allowed.count(folder)) continue;
        found.push_back(entry.path().lexically_relative(root).string() + ":" + std::to_string(number) + ": " +
                        layer + "/ may include only " + joined(allowed) + ", but includes \"" + name.string() +
                        "\" (" + (folder.empty() ? target.string() : target.lexically_relative(root).string()) + ")");
      }
    }
  }
  std::sort(found.begin(), found.end());  // directory order is the file system's
  return found;
}

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

}  // namespace

TEST_CASE("no folder of the library includes a layer above it", "[layering]") {
  const fs::path root = LATENT_SOURCE_ROOT;
  REQUIRE(fs::is_directory(root / "core"));
  REQUIRE(fs::is_directory(root / "models"));
  const std::vector<std::string> violations = layering_violations(root);
  for (const std::string& v : violations) UNSCOPED_INFO(v);
  CHECK(violations.empty());
}

TEST_CASE("the layering check names the file, the line and the rule of a planted violation", "[layering]") {
  latent::testing::TempDir tree("latent-layering");
  write(tree.path / "core" / "tensor.hpp", "// core\n#include <vector>\n#include \"dtype.hpp\"\n");
  write(tree.path / "core" / "dtype.hpp", "// core\n");
  write(tree.path / "nn" / "module.hpp", "// nn\n#include \"../core/tensor.hpp\"\n");
  write(tree.path / "models" / "model.hpp", "// models\n#include \"../nn/module.hpp\"\n#include \"train/trainer.hpp\"\n");
  write(tree.path / "train" / "trainer.hpp", "// train\n#include \"../models/model.hpp\"\n");
  write(tree.path / "io" / "json.hpp", "// io\n#include \"../core/tensor.hpp\"\n#include \"fmt/format.h\"\n");
  REQUIRE(layering_violations(tree.path).empty() == false);  // models -> train
  write(tree.path / "models" / "model.hpp", "// models\n#include \"../nn/module.hpp\"\n");
  REQUIRE(layering_violations(tree.path).empty());  // the clean tree passes (fmt/format.h is not ours)

  SECTION("a relative include of a higher layer") {
    write(tree.path / "core" / "tensor.hpp", "// core\n#include \"dtype.hpp\"\n\n  #  include \"../nn/module.hpp\"\n");
    const std::vector<std::string> v = layering_violations(tree.path);
    REQUIRE(v.size() == 1);
    CHECK(v[0] == "core/tensor.hpp:4: core/ may include only core, but includes \"../nn/module.hpp\" (nn/module.hpp)");
  }
  SECTION("an include resolved from the source root, in a nested folder") {
    write(tree.path / "io" / "formats" / "table.cpp", "// io\n#include \"autograd/node.hpp\"\n");
    write(tree.path / "autograd" / "node.hpp", "// autograd\n#include \"../core/tensor.hpp\"\n");
    const std::vector<std::string> v = layering_violations(tree.path);
    REQUIRE(v.size() == 1);
    CHECK(v[0] == "io/formats/table.cpp:2: io/ may include only core, io, but includes \"autograd/node.hpp\" "
                  "(autograd/node.hpp)");
  }
  SECTION("beside is not below: distributed may not include optim, nor autograd io's neighbour") {
    write(tree.path / "optim" / "adamw.hpp", "// optim\n");
    write(tree.path / "distributed" / "group.cpp", "// distributed\n#include \"../optim/adamw.hpp\"\n");
    write(tree.path / "autograd" / "node.cpp", "// autograd\n#include \"../io/json.hpp\"\n");
    const std::vector<std::string> v = layering_violations(tree.path);
    REQUIRE(v.size() == 2);
    CHECK(v[0] == "autograd/node.cpp:2: autograd/ may include only autograd, core, but includes \"../io/json.hpp\" "
                  "(io/json.hpp)");
    CHECK(v[1] == "distributed/group.cpp:2: distributed/ may include only autograd, core, distributed, io, but "
                  "includes \"../optim/adamw.hpp\" (optim/adamw.hpp)");
  }
  SECTION("a library file including the tests") {
    write(tree.path / "tests" / "helpers.hpp", "// tests\n");
    write(tree.path / "train" / "trainer.hpp", "// train\n#include \"../tests/helpers.hpp\"\n");
    const std::vector<std::string> v = layering_violations(tree.path);
    REQUIRE(v.size() == 1);
    CHECK(v[0] == "train/trainer.hpp:2: train/ may include only autograd, core, distributed, io, models, nn, optim, "
                  "tokenizer, train, but includes \"../tests/helpers.hpp\" (tests/helpers.hpp)");
  }
}
