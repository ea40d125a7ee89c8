// A small deterministic SVG line chart: axes with "nice" ticks, one polyline with markers per
// series, a legend. Enough for metric-vs-bits plots without a plotting dependency.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace kvx::report {

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // sorted by x
};

std::string svg_line_chart(const std::string& title, const std::string& x_label, const std::string& y_label,
                           const std::vector<Series>& series);

}  // namespace kvx::report
