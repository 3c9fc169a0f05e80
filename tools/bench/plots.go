package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// writePlots draws the PNGs of the sections that ran.
func (b *bench) writePlots() []error {
	var errs []error
	add := func(name string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return
		}
		b.wrote(filepath.Join(b.cfg.Out, name))
	}
	if len(b.report.Rate) > 0 {
		for _, d := range b.cfg.Directions {
			name := "rate-" + d + ".png"
			add(name, b.plotRate(d, filepath.Join(b.cfg.Out, name)))
		}
	}
	if len(b.report.Latency) > 0 {
		add("latency.png", b.plotLatency(filepath.Join(b.cfg.Out, "latency.png")))
	}
	if len(b.report.Loss) > 0 {
		add("loss.png", b.plotLoss(filepath.Join(b.cfg.Out, "loss.png")))
	}
	return errs
}

// saveTiles draws plots side by side into one PNG.
func saveTiles(path string, w, h vg.Length, plots ...*plot.Plot) error {
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(110))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Millimeter * 6, PadTop: vg.Millimeter * 2,
		PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	for i, p := range plots {
		p.Draw(tiles.At(dc, i, 0))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type errPoints struct {
	plotter.XYs
	plotter.YErrors
}

func bitsTick(v float64) string {
	switch {
	case v >= 1e9:
		return strconv.FormatFloat(v/1e9, 'g', 3, 64) + "G"
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 3, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'g', 3, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// bitTicks are log ticks at 1, 2, 5 × 10^k bit/s labelled 10M, 1G…
type bitTicks struct{}

func (bitTicks) Ticks(min, max float64) []plot.Tick {
	var t []plot.Tick
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v < min || v > max {
				continue
			}
			l := ""
			if m == 1 || m == 5 {
				l = bitsTick(v)
			}
			t = append(t, plot.Tick{Value: v, Label: l})
		}
	}
	return t
}

func (b *bench) plotRate(dir, path string) error {
	var pts []*ratePoint
	for _, p := range b.report.Rate {
		if p.Direction == dir {
			pts = append(pts, p)
		}
	}
	if len(pts) == 0 {
		return fmt.Errorf("no points")
	}
	lo, hi := math.Inf(1), 0.0
	for _, p := range pts {
		lo = math.Min(lo, float64(p.TargetBps))
		hi = math.Max(hi, float64(p.TargetBps))
		if p.MedianWireBps > 0 {
			lo = math.Min(lo, p.MinWireBps)
			hi = math.Max(hi, p.MaxWireBps)
		}
	}
	lo, hi = lo/2, hi*2

	ll := plot.New()
	ll.Title.Text = fmt.Sprintf("Pod %s: wire rate on the receiving veth vs target", dir)
	ll.X.Label.Text = "target (bit/s)"
	ll.Y.Label.Text = "wire rate (bit/s)"
	ll.X.Scale, ll.Y.Scale = plot.LogScale{}, plot.LogScale{}
	ll.X.Tick.Marker, ll.Y.Tick.Marker = bitTicks{}, bitTicks{}
	ll.X.Min, ll.X.Max, ll.Y.Min, ll.Y.Max = lo, hi, lo, hi
	ll.Add(plotter.NewGrid())
	ideal, _ := plotter.NewLine(plotter.XYs{{X: lo, Y: lo}, {X: hi, Y: hi}})
	ideal.Color = color.Gray{150}
	ideal.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	ll.Add(ideal)
	ll.Legend.Add("ideal (= target)", ideal)
	ll.Legend.Top, ll.Legend.Left = false, false // bottom right: empty below the diagonal
	ll.Legend.XOffs, ll.Legend.YOffs = -vg.Millimeter*3, vg.Millimeter*3

	rp := plot.New()
	rp.Title.Text = fmt.Sprintf("Pod %s: wire rate / target (median, min..max)", dir)
	rp.X.Label.Text = "target (bit/s)"
	rp.Y.Label.Text = "ratio"
	rp.X.Scale = plot.LogScale{}
	rp.X.Tick.Marker = bitTicks{}
	rp.X.Min, rp.X.Max = lo, hi
	rp.Add(plotter.NewGrid())
	for _, v := range []float64{0.98, 1, 1.02} {
		l, _ := plotter.NewLine(plotter.XYs{{X: lo, Y: v}, {X: hi, Y: v}})
		l.Color = color.Gray{150}
		if v != 1 {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		rp.Add(l)
		if v == 0.98 {
			rp.Legend.Add("±2 %", l)
		}
	}
	rp.Legend.Top, rp.Legend.Left = true, true
	rmin, rmax := 0.9, 1.1

	for i, m := range b.cfg.Modes {
		// A small per-mode offset on the log x axis keeps markers apart.
		off := math.Pow(1.06, float64(i)-float64(len(b.cfg.Modes)-1)/2)
		var xy, rxy errPoints
		for _, p := range pts {
			if p.Mode != m || p.MedianWireBps <= 0 {
				continue
			}
			x := float64(p.TargetBps) * off
			xy.XYs = append(xy.XYs, plotter.XY{X: x, Y: p.MedianWireBps})
			xy.YErrors = append(xy.YErrors, struct{ Low, High float64 }{p.MedianWireBps - p.MinWireBps, p.MaxWireBps - p.MedianWireBps})
			rxy.XYs = append(rxy.XYs, plotter.XY{X: x, Y: p.Ratio})
			rxy.YErrors = append(rxy.YErrors, struct{ Low, High float64 }{p.Ratio - p.MinRatio, p.MaxRatio - p.Ratio})
			rmin, rmax = math.Min(rmin, p.MinRatio), math.Max(rmax, p.MaxRatio)
		}
		if len(xy.XYs) == 0 {
			continue
		}
		c := plotutil.Color(i)
		for _, pl := range []struct {
			p  *plot.Plot
			xy errPoints
		}{{ll, xy}, {rp, rxy}} {
			line, sc, err := plotter.NewLinePoints(pl.xy.XYs)
			if err != nil {
				return err
			}
			line.Color, sc.Color, sc.Shape = c, c, plotutil.Shape(i)
			sc.Radius = vg.Points(3.5)
			eb, err := plotter.NewYErrorBars(pl.xy)
			if err != nil {
				return err
			}
			eb.Color = c
			pl.p.Add(line, sc, eb)
			pl.p.Legend.Add(m, line, sc)
		}
	}
	// Headroom above the points for the legend.
	rp.Y.Min, rp.Y.Max = math.Max(0, rmin-0.02), rmax+0.02+0.3*(rmax-rmin+0.04)
	return saveTiles(path, 30*vg.Centimeter, 13*vg.Centimeter, ll, rp)
}

// logBars draws bars from a floor up to their value, for log y axes.
type logBars struct {
	xs, ys []float64
	width  float64
	floor  float64
	color  color.Color
}

func (lb *logBars) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	for i := range lb.xs {
		if lb.ys[i] <= 0 {
			continue
		}
		x0, x1 := trX(lb.xs[i]-lb.width/2), trX(lb.xs[i]+lb.width/2)
		y0, y1 := trY(lb.floor), trY(lb.ys[i])
		poly := []vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}}
		c.FillPolygon(lb.color, c.ClipPolygonY(poly))
	}
}

func (lb *logBars) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax, ymin, ymax = math.Inf(1), math.Inf(-1), lb.floor, lb.floor
	for i := range lb.xs {
		xmin = math.Min(xmin, lb.xs[i]-lb.width/2)
		xmax = math.Max(xmax, lb.xs[i]+lb.width/2)
		ymax = math.Max(ymax, lb.ys[i])
	}
	return
}

func (lb *logBars) Thumbnail(c *draw.Canvas) {
	pts := []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y}}
	c.FillPolygon(lb.color, pts)
}

func (b *bench) plotLatency(path string) error {
	type cond struct {
		rate uint64
		dir  string
	}
	var conds []cond
	var idle *latPoint
	seen := map[cond]bool{}
	for _, p := range b.report.Latency {
		if p.Mode == "idle" {
			idle = p
			continue
		}
		c := cond{p.TargetBps, p.Direction}
		if !seen[c] {
			seen[c] = true
			conds = append(conds, c)
		}
	}
	sort.SliceStable(conds, func(i, j int) bool { return conds[i].rate < conds[j].rate })
	labels := make([]string, len(conds))
	for i, c := range conds {
		labels[i] = shortRate(c.rate) + " " + c.dir
	}
	var plots []*plot.Plot
	for _, q := range []string{"p50", "p99"} {
		p := plot.New()
		p.Title.Text = "ping RTT " + q + " at the limit (pod A's own TCP flow saturating it)"
		p.Y.Label.Text = "RTT " + q + " (ms, log)"
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Add(plotter.NewGrid())
		floor := 0.01
		maxY := 1.0
		nm := len(b.cfg.Modes)
		w := 0.8 / float64(max(nm, 1))
		for i, m := range b.cfg.Modes {
			lb := &logBars{width: w * 0.9, floor: floor, color: plotutil.Color(i)}
			for ci, c := range conds {
				for _, lp := range b.report.Latency {
					if lp.Mode != m || lp.TargetBps != c.rate || lp.Direction != c.dir || lp.Received == 0 {
						continue
					}
					v := lp.P50Ms
					if q == "p99" {
						v = lp.P99Ms
					}
					lb.xs = append(lb.xs, float64(ci)+(float64(i)-float64(nm-1)/2)*w)
					lb.ys = append(lb.ys, math.Max(v, floor))
					maxY = math.Max(maxY, v)
				}
			}
			p.Add(lb)
			p.Legend.Add(m, lb)
		}
		if idle != nil && idle.Received > 0 {
			v := idle.P50Ms
			if q == "p99" {
				v = idle.P99Ms
			}
			l, _ := plotter.NewLine(plotter.XYs{{X: -0.5, Y: v}, {X: float64(len(conds)) - 0.5, Y: v}})
			l.Color = color.Black
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			p.Add(l)
			p.Legend.Add(fmt.Sprintf("idle (%.3f ms)", v), l)
			if q == "p99" {
				l1, _ := plotter.NewLine(plotter.XYs{{X: -0.5, Y: v + 1}, {X: float64(len(conds)) - 0.5, Y: v + 1}})
				l1.Color = color.RGBA{R: 200, A: 255}
				l1.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
				p.Add(l1)
				p.Legend.Add("idle + 1 ms (goal)", l1)
			}
		}
		p.NominalX(labels...)
		p.X.Min, p.X.Max = -0.5, float64(len(conds))-0.5
		p.Y.Min, p.Y.Max = floor, maxY*40 // headroom for the legend
		p.Legend.Top, p.Legend.Left = true, true
		plots = append(plots, p)
	}
	return saveTiles(path, 32*vg.Centimeter, 13*vg.Centimeter, plots...)
}

func (b *bench) plotLoss(path string) error {
	sc := plot.New()
	sc.Title.Text = "Loss: measured vs expected P(drop)"
	sc.X.Label.Text = "expected P(drop)"
	sc.Y.Label.Text = "measured drops / sent"
	sc.X.Scale, sc.Y.Scale = plot.LogScale{}, plot.LogScale{}
	sc.X.Tick.Marker, sc.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	sc.Add(plotter.NewGrid())
	lo, hi := 1e-4, 1.5
	sc.X.Min, sc.X.Max, sc.Y.Min, sc.Y.Max = lo, hi, lo, hi
	ideal, _ := plotter.NewLine(plotter.XYs{{X: lo, Y: lo}, {X: hi, Y: hi}})
	ideal.Color = color.Gray{150}
	ideal.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	sc.Add(ideal)
	sc.Legend.Add("ideal", ideal)
	sc.Legend.Top, sc.Legend.Left = true, true

	zp := plot.New()
	zp.Title.Text = "Loss: z = (drops - np) / sqrt(np(1-p))"
	zp.Y.Label.Text = "z"
	zp.Add(plotter.NewGrid())
	var labels []string
	zmax := 5.0
	for i, dist := range []string{"uniform", "exponential"} {
		var xy errPoints
		var zxy plotter.XYs
		for _, p := range b.report.Loss {
			if p.Dist != dist || p.Error != "" {
				continue
			}
			label := fmt.Sprintf("u %g%%", p.Param)
			if dist == "exponential" {
				label = fmt.Sprintf("e t=%g", p.Param)
			}
			if p.Direction != "egress" {
				label += " " + p.Direction[:2]
			}
			z := 0.0
			if p.Z != nil {
				z = *p.Z
			} else if p.Flag {
				z = math.Copysign(10, p.Measured-p.Expected)
			}
			zxy = append(zxy, plotter.XY{X: float64(len(labels)), Y: z})
			labels = append(labels, label)
			zmax = math.Max(zmax, math.Abs(z)+0.5)
			if p.Expected > 0 && p.Measured > 0 {
				s := math.Sqrt(p.Expected*(1-p.Expected)/float64(p.Sent)) * 3
				xy.XYs = append(xy.XYs, plotter.XY{X: p.Expected, Y: p.Measured})
				low := math.Min(s, p.Measured-lo)
				xy.YErrors = append(xy.YErrors, struct{ Low, High float64 }{low, s})
			}
		}
		c := plotutil.Color(i)
		if len(xy.XYs) > 0 {
			s, err := plotter.NewScatter(xy.XYs)
			if err != nil {
				return err
			}
			s.Color, s.Shape, s.Radius = c, plotutil.Shape(i), vg.Points(4)
			eb, err := plotter.NewYErrorBars(xy)
			if err != nil {
				return err
			}
			eb.Color = c
			sc.Add(s, eb)
			sc.Legend.Add(dist+" (bars: ±3σ)", s)
		}
		if len(zxy) > 0 {
			s, err := plotter.NewScatter(zxy)
			if err != nil {
				return err
			}
			s.Color, s.Shape, s.Radius = c, plotutil.Shape(i), vg.Points(4)
			zp.Add(s)
			zp.Legend.Add(dist, s)
		}
	}
	for _, v := range []float64{-3, 0, 3} {
		l, _ := plotter.NewLine(plotter.XYs{{X: -0.5, Y: v}, {X: float64(len(labels)) - 0.5, Y: v}})
		l.Color = color.Gray{150}
		if v != 0 {
			l.Color = color.RGBA{R: 200, A: 255}
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		zp.Add(l)
		if v == 3 {
			zp.Legend.Add("±3σ", l)
		}
	}
	zp.NominalX(labels...)
	zp.X.Min, zp.X.Max = -0.5, float64(len(labels))-0.5
	zp.Y.Min, zp.Y.Max = -zmax, zmax
	zp.Legend.Top = true
	return saveTiles(path, 30*vg.Centimeter, 13*vg.Centimeter, sc, zp)
}
