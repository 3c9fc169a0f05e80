// Command demo is the measuring half of `make demo`: on the local cluster
// (tools/cluster/up.sh) with kubeshaper deployed (tools/cluster/deploy.sh)
// it starts two pods of the traffic image, measures pod→pod TCP throughput
// and UDP loss unshaped, annotates the client pod with
//
//	kubeshaper.io/bandwidth: "50mbps egress"
//	kubeshaper.io/loss:      "uniform egress 1%"
//
// measures again, prints a before/after table (target vs achieved) and
// draws docs/demo.png. Runs as root on the node.
package main

import (
	"context"
	"flag"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/kubeshaper/kubeshaper/tests/realnode"
)

const (
	ns         = "kubeshaper-demo"
	targetRate = 50e6
	targetLoss = 0.01
	bwValue    = "50mbps egress"
	lossValue  = "uniform egress 1%"
)

type run struct {
	tcp realnode.TCPResult
	udp realnode.UDPResult
	// The agent's drop counters on the client's egress, by reason, while
	// each measurement ran.
	tcpDrops, udpDrops string
}

func main() {
	out := flag.String("out", "", "PNG to write (default <repo>/docs/demo.png)")
	dur := flag.Duration("duration", 5*time.Second, "length of each TCP measurement")
	count := flag.Int("udp-count", 20000, "UDP datagrams per loss measurement")
	keep := flag.Bool("keep", false, "leave the demo namespace and its pods running")
	flag.Parse()
	if err := demo(*out, *dur, *count, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) {
	fmt.Printf("==> "+format+"\n", a...)
}

func demo(out string, dur time.Duration, count int, keep bool) error {
	repo := realnode.RepoRoot()
	if out == "" {
		out = filepath.Join(repo, "docs", "demo.png")
	}
	c, err := realnode.Open(repo)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := c.DeleteNamespace(ctx, ns, 2*time.Minute); err != nil {
		return err
	}
	if err := c.CreateNamespace(ctx, ns); err != nil {
		return err
	}
	if !keep {
		defer func() {
			step("deleting namespace %s (the agent removes the rules with the pods)", ns)
			c.DeleteNamespace(context.Background(), ns, 2*time.Minute)
		}()
	}

	step("starting pods client and server (image %s)", c.TrafficImage)
	for _, n := range []string{"client", "server"} {
		if err := c.CreateTrafficPod(ctx, ns, n, map[string]string{"app": "demo-" + n}, nil); err != nil {
			return err
		}
	}
	client, err := c.WaitPodReady(ctx, ns, "client", 2*time.Minute)
	if err != nil {
		return err
	}
	server, err := c.WaitPodReady(ctx, ns, "server", 2*time.Minute)
	if err != nil {
		return err
	}
	veth, err := realnode.HostVeth(client.Status.PodIP)
	if err != nil {
		return err
	}
	fmt.Printf("    client %s (host veth %s), server %s, node %s\n", client.Status.PodIP, veth.Name, server.Status.PodIP, client.Spec.NodeName)

	measure := func(label string) (run, error) {
		var r run
		step("%s: TCP client→server for %v, then %d UDP datagrams", label, dur, count)
		d0 := drops(ctx, c, veth.Name)
		if r.tcp, err = c.TCP(ctx, ns, "client", server.Status.PodIP, dur, false); err != nil {
			return r, err
		}
		d1 := drops(ctx, c, veth.Name)
		if r.udp, err = c.UDP(ctx, ns, "client", server.Status.PodIP, count, 5000); err != nil {
			return r, err
		}
		d2 := drops(ctx, c, veth.Name)
		r.tcpDrops, r.udpDrops = diffDrops(d0, d1), diffDrops(d1, d2)
		fmt.Printf("    TCP %s, UDP %d/%d lost (%.2f%%)\n", rate(r.tcp.BitsPerS), r.udp.Lost, r.udp.Sent, r.udp.Loss*100)
		return r, nil
	}
	before, err := measure("unshaped")
	if err != nil {
		return err
	}

	step("kubectl annotate pod client kubeshaper.io/bandwidth=%q kubeshaper.io/loss=%q", bwValue, lossValue)
	if err := c.Annotate(ctx, "pod", ns, "client", map[string]string{
		"kubeshaper.io/bandwidth": bwValue, "kubeshaper.io/loss": lossValue}); err != nil {
		return err
	}
	applied := time.Now()
	var rule string
	err = realnode.Poll(ctx, 30*time.Second, func() (bool, error) {
		st, err := c.AgentStatus(ctx)
		if err != nil {
			return false, nil
		}
		if s := realnode.Find(st, veth.Name); s != nil {
			for _, d := range s.Directions {
				if d.Direction == "egress" && d.RateBits == uint64(targetRate) && math.Abs(d.LossRatio-targetLoss) < 1e-4 {
					rule = d.Rule
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("the agent did not apply the rule: %w", err)
	}
	fmt.Printf("    applied in %v: %s egress: %s\n", time.Since(applied).Round(10*time.Millisecond), veth.Name, rule)

	after, err := measure("shaped")
	if err != nil {
		return err
	}

	lo, hi := realnode.LossBounds(after.udp.Sent, targetLoss)
	n := float64(after.udp.Sent)
	fmt.Println()
	fmt.Printf("kubeshaper demo — pod client → pod server, node %s, host veth %s\n", client.Spec.NodeName, veth.Name)
	fmt.Printf("annotations: kubeshaper.io/bandwidth: %q, kubeshaper.io/loss: %q\n\n", bwValue, lossValue)
	tw := tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "\ttarget\tbefore (unshaped)\tafter (annotated)\tverdict")
	verdict := "achieved/target " + fmt.Sprintf("%.0f%%", after.tcp.BitsPerS/targetRate*100)
	fmt.Fprintf(tw, "TCP throughput (%v)\t%s\t%s\t%s\t%s\n", dur, rate(targetRate), rate(before.tcp.BitsPerS), rate(after.tcp.BitsPerS), verdict)
	within := "outside"
	if float64(after.udp.Lost) >= lo && float64(after.udp.Lost) <= hi {
		within = "within"
	}
	fmt.Fprintf(tw, "UDP loss (%d datagrams)\t%.2f%%\t%.2f%% (%d)\t%.2f%% (%d)\t%s 3σ [%.2f%%, %.2f%%]\n", after.udp.Sent,
		targetLoss*100, before.udp.Loss*100, before.udp.Lost, after.udp.Loss*100, after.udp.Lost, within, lo/n*100, hi/n*100)
	fmt.Fprintf(tw, "datapath drops during TCP\t\t%s\t%s\t(agent counters, client egress)\n", before.tcpDrops, after.tcpDrops)
	fmt.Fprintf(tw, "datapath drops during UDP\t\t%s\t%s\t\n", before.udpDrops, after.udpDrops)
	tw.Flush()
	fmt.Println()

	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := drawPlot(out, before, after, dur); err != nil {
		return err
	}
	fmt.Printf("plot: %s\n", out)
	return nil
}

func drops(ctx context.Context, c *realnode.Cluster, veth string) map[string]uint64 {
	m := map[string]uint64{}
	st, err := c.AgentStatus(ctx)
	if err != nil {
		return m
	}
	if s := realnode.Find(st, veth); s != nil {
		for _, d := range s.Directions {
			if d.Direction == "egress" {
				for k, v := range d.Drops {
					m[k] = v.Packets
				}
			}
		}
	}
	return m
}

func diffDrops(a, b map[string]uint64) string {
	var parts []string
	for k, v := range b {
		if d := v - a[k]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, d))
		}
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func rate(bps float64) string {
	if bps >= 1e9 {
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	}
	return fmt.Sprintf("%.1f Mbit/s", bps/1e6)
}

// drawPlot: left, TCP throughput over time before and after (log scale)
// with the target; right, UDP loss before and after with the target and
// its 3σ band.
func drawPlot(path string, before, after run, dur time.Duration) error {
	tp := plot.New()
	tp.Title.Text = "pod→pod TCP throughput (500 ms bins)"
	tp.X.Label.Text = "time (s)"
	tp.Y.Label.Text = "Mbit/s (log)"
	tp.Y.Scale = plot.LogScale{}
	tp.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	// The traffic tool reports 100 ms bins; a drop policer makes TCP send
	// in bursts between retransmission timeouts, so plot 500 ms averages.
	series := func(r realnode.TCPResult) plotter.XYs {
		const per = 5
		var xy plotter.XYs
		for i := 0; (i+per)*r.BinMS <= int(r.Seconds*1000)+50 && i+per <= len(r.Bins); i += per {
			sum := 0.0
			for _, b := range r.Bins[i : i+per] {
				sum += b
			}
			xy = append(xy, plotter.XY{X: float64(i+per) * float64(r.BinMS) / 1000, Y: math.Max(sum/per/1e6, 1)})
		}
		return xy
	}
	colBefore := color.RGBA{R: 0x99, G: 0x99, B: 0x99, A: 255}
	colAfter := color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 255}
	colTarget := color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 255}
	lb, err := plotter.NewLine(series(before.tcp))
	if err != nil {
		return err
	}
	lb.Color = colBefore
	lb.Width = vg.Points(1.5)
	la, err := plotter.NewLine(series(after.tcp))
	if err != nil {
		return err
	}
	la.Color = colAfter
	la.Width = vg.Points(1.5)
	tl, err := plotter.NewLine(plotter.XYs{{X: 0, Y: targetRate / 1e6}, {X: dur.Seconds(), Y: targetRate / 1e6}})
	if err != nil {
		return err
	}
	tl.Color = colTarget
	tl.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
	tp.Add(lb, la, tl)
	tp.Legend.Add(fmt.Sprintf("unshaped (%s)", rate(before.tcp.BitsPerS)), lb)
	tp.Legend.Add(fmt.Sprintf("50mbps egress (%s)", rate(after.tcp.BitsPerS)), la)
	tp.Legend.Add("target 50 Mbit/s", tl)
	tp.Legend.Top = true
	tp.Legend.Left = false
	tp.Y.Min = 1
	tp.Y.Max = 1e6 // room for the legend above the unshaped line
	tp.X.Min = 0

	lp := plot.New()
	lp.Title.Text = fmt.Sprintf("UDP loss, %d datagrams", after.udp.Sent)
	lp.Y.Label.Text = "lost (%)"
	bars, err := plotter.NewBarChart(plotter.Values{before.udp.Loss * 100, after.udp.Loss * 100}, vg.Points(40))
	if err != nil {
		return err
	}
	bars.Color = colAfter
	bars.LineStyle.Width = 0
	lp.Add(bars)
	lp.NominalX("unshaped", "uniform egress 1%")
	lo, hi := realnode.LossBounds(after.udp.Sent, targetLoss)
	n := float64(after.udp.Sent)
	var band *plotter.Line
	for _, y := range []float64{lo / n * 100, hi / n * 100} {
		band, _ = plotter.NewLine(plotter.XYs{{X: -0.5, Y: y}, {X: 1.5, Y: y}})
		band.Color = colTarget
		band.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		lp.Add(band)
	}
	tgt, _ := plotter.NewLine(plotter.XYs{{X: -0.5, Y: targetLoss * 100}, {X: 1.5, Y: targetLoss * 100}})
	tgt.Color = colTarget
	lp.Add(tgt)
	lp.Legend.Add("target 1%", tgt)
	lp.Legend.Add(fmt.Sprintf("3σ for %d datagrams", after.udp.Sent), band)
	lp.Legend.Top = true
	lp.Legend.Left = true
	lp.Y.Min = 0
	lp.Y.Max = math.Max(targetLoss*100*1.6, after.udp.Loss*100*1.2)

	img := vgimg.NewWith(vgimg.UseWH(28*vg.Centimeter, 10*vg.Centimeter), vgimg.UseDPI(110))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Millimeter * 8, PadTop: vg.Millimeter * 2,
		PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{{tp, lp}}, tiles, dc)
	tp.Draw(canvases[0][0])
	lp.Draw(canvases[0][1])
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
