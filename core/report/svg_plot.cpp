#include "core/report/svg_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace kvx::report {
namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '&') o += "&amp;";
    else if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

// Ticks at 1/2/5 x 10^k covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int target = 6) {
  if (!(hi > lo)) {
    double d = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= d;
    hi += d;
  }
  double raw = (hi - lo) / target;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::floor(lo / step) * step; v <= hi + step * 1e-9; v += step) t.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
  if (t.empty() || t.front() > lo) t.insert(t.begin(), t.front() - step);
  if (t.back() < hi) t.push_back(t.back() + step);
  return t;
}

std::string tick_text(double v) {
  std::string s = fmt::format("{:.6g}", v);
  return s;
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

}  // namespace

std::string svg_line_chart(const std::string& title, const std::string& x_label, const std::string& y_label,
                           const std::vector<Series>& series) {
  const double W = 720, H = 440, L = 80, R = 200, T = 40, B = 60;
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const auto& s : series)
    for (const auto& [x, y] : s.points) {
      xmin = std::min(xmin, x);
      xmax = std::max(xmax, x);
      ymin = std::min(ymin, y);
      ymax = std::max(ymax, y);
    }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  auto xt = nice_ticks(xmin, xmax), yt = nice_ticks(ymin, ymax);
  double x0 = xt.front(), x1 = xt.back(), y0 = yt.front(), y1 = yt.back();
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };

  std::string o = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n",
      W, H, W, H);
  o += fmt::format("<rect width=\"{}\" height=\"{}\" fill=\"white\"/>\n", W, H);
  o += fmt::format("<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n", (L + W - R) / 2,
                   esc(title));
  // Grid, ticks and labels.
  for (double v : xt) {
    o += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#e0e0e0\"/>\n", px(v), T,
                     H - B);
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", px(v), H - B + 18,
                     tick_text(v));
  }
  for (double v : yt) {
    o += fmt::format("<line x1=\"{1:.1f}\" y1=\"{0:.1f}\" x2=\"{2:.1f}\" y2=\"{0:.1f}\" stroke=\"#e0e0e0\"/>\n", py(v), L,
                     W - R);
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", L - 6, py(v) + 4,
                     tick_text(v));
  }
  o += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n", L, H - B, W - R);
  o += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"black\"/>\n", L, T, H - B);
  o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (L + W - R) / 2, H - 16,
                   esc(x_label));
  o += fmt::format("<text x=\"18\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {0})\">{1}</text>\n",
                   (T + H - B) / 2, esc(y_label));
  // Series and legend.
  for (size_t i = 0; i < series.size(); ++i) {
    const char* color = kColors[(series[i].color >= 0 ? size_t(series[i].color) : i) % 10];
    std::string pts;
    for (const auto& [x, y] : series[i].points) pts += fmt::format("{}{:.1f},{:.1f}", pts.empty() ? "" : " ", px(x), py(y));
    if (series[i].line)
      o += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", color, pts);
    for (const auto& [x, y] : series[i].points)
      o += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" fill=\"{}\"{}/>\n", px(x), py(y), color,
                       series[i].line ? "" : " fill-opacity=\"0.35\"");
    double ly = T + 10 + 20.0 * static_cast<double>(i);
    if (series[i].line)
      o += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-width=\"2\"/>\n",
                       W - R + 15, ly, W - R + 40, ly, color);
    o += fmt::format("<circle cx=\"{}\" cy=\"{:.1f}\" r=\"3.5\" fill=\"{}\"/>\n", W - R + 27.5, ly, color);
    o += fmt::format("<text x=\"{}\" y=\"{:.1f}\">{}</text>\n", W - R + 46, ly + 4, esc(series[i].name));
  }
  o += "</svg>\n";
  return o;
}

std::string svg_heatmap(const std::string& title, const std::string& x_label, const std::string& y_label,
                        const std::vector<HeatmapPanel>& panels) {
  const double cell_w = 64, cell_h = 30, L = 90, T = 60, B = 50, gap = 40;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& p : panels)
    for (const auto& row : p.values)
      for (double v : row)
        if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  double W = L, H = T + B;
  for (const auto& p : panels) {
    W += cell_w * double(p.x_labels.size()) + gap;
    H = std::max(H, T + B + cell_h * double(p.y_labels.size()));
  }
  std::string o = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n",
      W, H);
  o += fmt::format("<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n", W / 2, esc(title));
  o += fmt::format("<text x=\"16\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {0})\">{1}</text>\n",
                   (T + H - B) / 2, esc(y_label));
  double left = L;
  for (const auto& p : panels) {
    const double pw = cell_w * double(p.x_labels.size());
    o += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{}</text>\n", left + pw / 2,
                     T - 14, esc(p.name));
    for (size_t yi = 0; yi < p.y_labels.size(); ++yi) {
      const double y = T + cell_h * double(yi);
      if (left == L)
        o += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", L - 6, y + cell_h / 2 + 4,
                         esc(p.y_labels[yi]));
      for (size_t xi = 0; xi < p.x_labels.size(); ++xi) {
        const double v = p.values[yi][xi], x = left + cell_w * double(xi);
        const double t = std::isfinite(v) ? (hi > lo ? (v - lo) / (hi - lo) : 1.0) : 0;
        // White to dark blue; text switches to white on dark cells.
        const int r = int(247 - t * (247 - 8)), g = int(251 - t * (251 - 48)), b = int(255 - t * (255 - 107));
        o += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"white\"/>\n", x,
                         y, cell_w, cell_h, std::isfinite(v) ? fmt::format("rgb({},{},{})", r, g, b) : "#dddddd");
        o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" fill=\"{}\">{}</text>\n", x + cell_w / 2,
                         y + cell_h / 2 + 4, t > 0.6 ? "white" : "black",
                         std::isfinite(v) ? fmt::format("{:.3g}", v) : std::string("-"));
      }
    }
    const double bottom = T + cell_h * double(p.y_labels.size());
    for (size_t xi = 0; xi < p.x_labels.size(); ++xi)
      o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n",
                       left + cell_w * (double(xi) + 0.5), bottom + 16, esc(p.x_labels[xi]));
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2, bottom + 36,
                     esc(x_label));
    left += pw + gap;
  }
  o += "</svg>\n";
  return o;
}

}  // namespace kvx::report
