// Reads the Prometheus text format back, so that tests look samples up by name and labels (label
// values unescaped) and check that every sample sits in its family's block, after its HELP and
// TYPE lines. Strict: a line it cannot read throws, naming the line.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace gpushare::testing {

struct Sample {
  std::string family;  // of the TYPE line it follows
  std::string name;
  std::map<std::string, std::string> labels;
  std::string value;
};

struct Exposition {
  std::vector<Sample> samples;
  std::map<std::string, std::string> types;  // family name -> gauge, counter, ...
  std::set<std::string> helped;              // families with a HELP line
  std::vector<std::string> type_order;       // families in the order of their TYPE lines
  std::vector<std::string> comments;         // other "# " lines

  // The value of the one sample called `name` whose labels include `labels`; nullopt when there
  // is none. Two matches throw: the test asked an ambiguous question.
  std::optional<std::string> value(const std::string& name,
                                   const std::map<std::string, std::string>& labels = {}) const {
    std::optional<std::string> found;
    for (const Sample& sample : samples) {
      if (sample.name != name) continue;
      bool matches = true;
      for (const auto& [label, wanted] : labels) {
        auto it = sample.labels.find(label);
        matches = matches && it != sample.labels.end() && it->second == wanted;
      }
      if (!matches) continue;
      if (found) throw std::runtime_error("more than one sample matches " + name);
      found = sample.value;
    }
    return found;
  }
};

inline Exposition parse_exposition(const std::string& text) {
  Exposition out;
  std::istringstream lines(text);
  std::string line;
  std::string family;
  while (std::getline(lines, line)) {
    const auto bad = [&line](const char* why) { return std::runtime_error(std::string(why) + ": " + line); };
    if (line.empty()) continue;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const std::size_t name_end = line.find(' ', 7);
      if (name_end == std::string::npos) throw bad("HELP or TYPE without text");
      const std::string name = line.substr(7, name_end - 7);
      if (line[2] == 'H') {
        out.helped.insert(name);
      } else {
        if (out.types.count(name) != 0) throw bad("second TYPE line");
        out.types[name] = line.substr(name_end + 1);
        out.type_order.push_back(name);
        family = name;
      }
      continue;
    }
    if (line[0] == '#') {
      out.comments.push_back(line);
      continue;
    }
    Sample sample;
    sample.family = family;
    std::size_t at = line.find_first_of("{ ");
    if (at == std::string::npos) throw bad("no value");
    sample.name = line.substr(0, at);
    if (line[at] == '{') {
      ++at;
      while (line.at(at) != '}') {
        const std::size_t equals = line.find("=\"", at);
        if (equals == std::string::npos) throw bad("label without a quoted value");
        const std::string label = line.substr(at, equals - at);
        std::string value;
        for (at = equals + 2; line.at(at) != '"'; ++at) {
          if (line[at] != '\\') {
            value += line[at];
            continue;
          }
          const char escaped = line.at(++at);
          if (escaped == 'n')
            value += '\n';
          else if (escaped == '\\' || escaped == '"')
            value += escaped;
          else
            throw bad("unknown escape in a label value");
        }
        sample.labels[label] = value;
        ++at;  // the closing quote
        if (line.at(at) == ',') ++at;
      }
      ++at;  // the closing brace
    }
    if (line.at(at) != ' ') throw bad("no space before the value");
    sample.value = line.substr(at + 1);
    if (sample.value.empty() || sample.value.find(' ') != std::string::npos) throw bad("not one value");
    out.samples.push_back(std::move(sample));
  }
  return out;
}

}  // namespace gpushare::testing
