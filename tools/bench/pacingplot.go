package main

import (
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotPacing draws, per target, the wire rate over time (100 ms bins, the
// first repetition) of every mode: one panel per case and stream count.
func (b *bench) plotPacing() []error {
	pr := b.report.Pacing
	var errs []error
	for _, r := range b.cfg.Rates {
		var panels []*plot.Plot
		for _, c := range b.cfg.PacingCases {
			for _, s := range b.cfg.Streams {
				p := plot.New()
				p.Title.Text = fmt.Sprintf("%s, %d stream(s), target %s", c, s, shortRate(r))
				p.X.Label.Text = "s from the first data"
				p.Y.Label.Text = "wire rate / target (100 ms bins)"
				p.Add(plotter.NewGrid())
				for _, v := range []float64{0.9, 1, 1.1} {
					l, _ := plotter.NewLine(plotter.XYs{{X: 0, Y: v}, {X: b.cfg.Duration.Seconds(), Y: v}})
					l.Color = color.Gray{150}
					if v != 1 {
						l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
					}
					p.Add(l)
				}
				n := 0
				for i, m := range b.cfg.Modes {
					for _, pt := range pr.Points {
						if pt.Case != c || pt.Streams != s || pt.TargetBps != r || pt.Mode != m || len(pt.Reps) == 0 {
							continue
						}
						var xy plotter.XYs
						for k, v := range pt.Reps[0].Bins100ms {
							xy = append(xy, plotter.XY{X: float64(k)/10 + 0.05, Y: v / float64(r)})
						}
						if len(xy) == 0 {
							continue
						}
						l, err := plotter.NewLine(xy)
						if err != nil {
							continue
						}
						l.Color = plotutil.Color(i)
						l.Width = vg.Points(1)
						p.Add(l)
						p.Legend.Add(m, l)
						n++
					}
				}
				if n == 0 {
					continue
				}
				p.Y.Min, p.Y.Max = 0, 2.5
				p.Legend.Top = true
				panels = append(panels, p)
			}
		}
		if len(panels) == 0 {
			continue
		}
		name := "pacing-" + shortRate(r) + ".png"
		path := filepath.Join(b.cfg.Out, name)
		if err := saveTiles(path, vg.Length(len(panels))*12*vg.Centimeter, 11*vg.Centimeter, panels...); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		b.wrote(path)
	}
	return errs
}
