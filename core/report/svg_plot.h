// Small deterministic SVG charts without a plotting dependency: a line chart (axes with "nice"
// ticks, one polyline and/or markers per series, a legend) for metric-vs-bits plots and Pareto
// envelopes, and a heatmap (one panel per series, cells labelled with their values) for grids
// such as passkey depth x length.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace kvx::report {

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // sorted by x
  bool line = true;     // false: markers only (a scatter)
  int color = -1;       // palette index; -1 = the series' own position
};

std::string svg_line_chart(const std::string& title, const std::string& x_label, const std::string& y_label,
                           const std::vector<Series>& series);

struct HeatmapPanel {
  std::string name;
  std::vector<std::string> x_labels, y_labels;
  std::vector<std::vector<double>> values;  // [y][x]; NaN = no result
};

// Colour scale from the smallest to the largest value over all panels (light to dark).
std::string svg_heatmap(const std::string& title, const std::string& x_label, const std::string& y_label,
                        const std::vector<HeatmapPanel>& panels);

}  // namespace kvx::report
