package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// lossPoint is one loss rule measured with numbered UDP datagrams.
type lossPoint struct {
	Dist         string   `json:"distribution"` // none, uniform, exponential
	Param        float64  `json:"param"`        // percent (uniform) or t (exponential)
	Direction    string   `json:"direction"`
	Command      string   `json:"command,omitempty"`
	Expected     float64  `json:"expected"` // P(drop)
	Sent         int      `json:"sent"`
	Received     int      `json:"received"`
	Dropped      int      `json:"dropped"`
	Measured     float64  `json:"measured"`
	SigmaDrops   float64  `json:"sigma_drops"` // sqrt(n p (1-p))
	Z            *float64 `json:"z"`           // null when sigma is 0 (p = 0 or 1)
	Flag         bool     `json:"outside_3_sigma"`
	SendErrors   int      `json:"send_errors"`
	RcvbufErrors int      `json:"receiver_rcvbuf_errors"` // UDP RcvbufErrors in the receiver's netns during the point
	Foreign      int      `json:"foreign_datagrams"`      // datagrams on the port that were not ours
	Duplicates   int      `json:"duplicates"`
	Error        string   `json:"error,omitempty"`
}

func (b *bench) lossSection() {
	cfg := b.cfg
	type spec struct {
		dist  string
		param float64
	}
	specs := []spec{{"none", 0}}
	for _, p := range cfg.LossUniform {
		specs = append(specs, spec{"uniform", p})
	}
	for _, t := range cfg.LossExp {
		specs = append(specs, spec{"exponential", t})
	}
	logf("== loss: %d UDP datagrams of %d B at %s per point, %d points × %v",
		cfg.LossN, cfg.LossSize, shortRate(cfg.LossRate), len(specs), cfg.LossDirs)
	for _, d := range cfg.LossDirs {
		for _, s := range specs {
			b.parkIfStopping()
			p := &lossPoint{Dist: s.dist, Param: s.param, Direction: d}
			b.lossOnce(p)
			b.report.Loss = append(b.report.Loss, p)
			if p.Error != "" {
				logf("loss %s %s %g: ERROR %s", d, s.dist, s.param, p.Error)
			} else {
				logf("loss %s %s %g: expected %.5f measured %.5f (%d/%d)", d, s.dist, s.param, p.Expected, p.Measured, p.Dropped, p.Sent)
			}
		}
	}
	b.printLoss()
}

func (b *bench) lossOnce(p *lossPoint) {
	var val string
	switch p.Dist {
	case "uniform":
		p.Expected = p.Param / 100
		val = fmt.Sprintf("uniform %s %s%%", p.Direction, strconv.FormatFloat(p.Param, 'f', -1, 64))
	case "exponential":
		p.Expected = math.Exp(-p.Param / 100)
		val = fmt.Sprintf("exponential %s %s", p.Direction, strconv.FormatFloat(p.Param, 'f', -1, 64))
	default:
		p.Command = "(no rule)"
	}
	if val != "" {
		cmd, err := b.applyLoss(val)
		p.Command = cmd
		defer b.clear(modeSpec{Name: "loss " + val, Kind: "loss"})
		if err != nil {
			p.Error = "apply: " + err.Error()
			return
		}
	}
	sendNS, recvNS, recvIP := b.topo.A, b.topo.B, ipB // egress: pod A sends
	if p.Direction == "ingress" {
		sendNS, recvNS, recvIP = b.topo.B, b.topo.A, ipA
	}
	res, err := b.udpTransfer(sendNS, recvNS, recvIP)
	p.Sent, p.SendErrors = res.send.Sent, res.send.Errors
	p.Received, p.RcvbufErrors, p.Foreign, p.Duplicates = res.recv.Received, res.recv.RcvbufErrors, res.recv.Foreign, res.recv.Duplicates
	if err != nil {
		p.Error = err.Error()
		return
	}
	if p.Sent == 0 {
		p.Error = "nothing sent"
		return
	}
	n := float64(p.Sent)
	p.Dropped = p.Sent - p.Received
	p.Measured = float64(p.Dropped) / n
	p.SigmaDrops = math.Sqrt(n * p.Expected * (1 - p.Expected))
	exp := n * p.Expected
	if p.SigmaDrops > 0 {
		z := (float64(p.Dropped) - exp) / p.SigmaDrops
		p.Z = &z
		p.Flag = math.Abs(z) > 3
	} else {
		// p = 0 or 1: exact, any difference of a whole datagram is out.
		p.Flag = math.Abs(float64(p.Dropped)-exp) >= 1
	}
}

type udpResult struct {
	send sendResult
	recv recvResult
}

// udpTransfer runs `bench udp-recv` in recvNS and `bench udp-send` in
// sendNS (this binary, executed inside the netns).
func (b *bench) udpTransfer(sendNS, recvNS, recvIP string) (udpResult, error) {
	var res udpResult
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	var runID [8]byte
	_, _ = rand.Read(runID[:])
	id := binary.BigEndian.Uint64(runID[:])
	addr := net.JoinHostPort(recvIP, fmt.Sprint(udpPort))
	cfg := b.cfg

	rc := exec.Command("ip", "netns", "exec", recvNS, self, "udp-recv", "-addr", addr, "-run", fmt.Sprint(id), "-n", fmt.Sprint(cfg.LossN))
	stdin, err := rc.StdinPipe()
	if err != nil {
		return res, err
	}
	stdout, err := rc.StdoutPipe()
	if err != nil {
		return res, err
	}
	var rerr bytes.Buffer
	rc.Stderr = &rerr
	if err := b.procs.start(rc); err != nil {
		return res, fmt.Errorf("udp-recv: %w", err)
	}
	defer func() { killGroup(rc); _ = rc.Wait(); b.procs.done(rc) }()
	br := bufio.NewReader(stdout)
	ready := make(chan error, 1)
	go func() {
		line, err := br.ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("unexpected %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			return res, fmt.Errorf("udp-recv: %v: %s", err, firstLine(rerr.String()))
		}
	case <-time.After(10 * time.Second):
		return res, fmt.Errorf("udp-recv not ready: %s", firstLine(rerr.String()))
	}

	sendTime := time.Duration(float64(cfg.LossN*cfg.LossSize*8) / float64(cfg.LossRate) * float64(time.Second))
	out, err := runCmd(sendTime+30*time.Second, "ip", "netns", "exec", sendNS, self, "udp-send",
		"-to", addr, "-run", fmt.Sprint(id), "-n", fmt.Sprint(cfg.LossN), "-size", fmt.Sprint(cfg.LossSize),
		"-rate", fmt.Sprint(cfg.LossRate))
	if err != nil {
		return res, fmt.Errorf("udp-send: %w", err)
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &res.send); err != nil {
		return res, fmt.Errorf("udp-send output %q: %v", out, err)
	}
	_ = stdin.Close() // tells the receiver the sender is done
	done := make(chan error, 1)
	go func() {
		line, err := br.ReadString('\n')
		if err == nil {
			err = json.Unmarshal([]byte(line), &res.recv)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return res, fmt.Errorf("udp-recv result: %v: %s", err, firstLine(rerr.String()))
		}
	case <-time.After(15 * time.Second):
		return res, fmt.Errorf("udp-recv gave no result")
	}
	return res, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Datagram layout: magic, run id, sequence number, padding.
var lossMagic = [8]byte{'K', 'S', 'B', 'L', 'O', 'S', 'S', '1'}

const lossHdr = 24

type sendResult struct {
	Sent    int     `json:"sent"`
	Errors  int     `json:"errors"`
	Seconds float64 `json:"seconds"`
}

// udpSendMain sends n numbered datagrams paced at rate bits/s of payload.
func udpSendMain(args []string) int {
	fs := flag.NewFlagSet("udp-send", flag.ExitOnError)
	to := fs.String("to", "", "receiver host:port")
	run := fs.Uint64("run", 0, "run id")
	n := fs.Int("n", 100000, "datagrams")
	size := fs.Int("size", 160, "payload bytes (≥ 24)")
	rate := fs.Uint64("rate", 16000000, "payload bits/s")
	_ = fs.Parse(args)
	if *size < lossHdr || *rate == 0 {
		fmt.Fprintln(os.Stderr, "udp-send: bad -size or -rate")
		return 2
	}
	c, err := net.Dial("udp", *to)
	if err != nil {
		fmt.Fprintln(os.Stderr, "udp-send:", err)
		return 1
	}
	defer c.Close()
	buf := make([]byte, *size)
	copy(buf, lossMagic[:])
	binary.BigEndian.PutUint64(buf[8:], *run)
	gap := time.Duration(float64(*size*8) / float64(*rate) * float64(time.Second))
	var r sendResult
	start := time.Now()
	for i := 0; i < *n; {
		// Send everything due by now, then sleep a little: bursts stay
		// at a few tens of datagrams, the average is exact.
		due := int(time.Since(start)/gap) + 1
		if due > *n {
			due = *n
		}
		for ; i < due; i++ {
			binary.BigEndian.PutUint64(buf[16:], uint64(i))
			if _, err := c.Write(buf); err != nil {
				r.Errors++
				continue
			}
			r.Sent++
		}
		time.Sleep(200 * time.Microsecond)
	}
	r.Seconds = time.Since(start).Seconds()
	j, _ := json.Marshal(r)
	fmt.Println(string(j))
	return 0
}

type recvResult struct {
	Received     int `json:"received"`
	Duplicates   int `json:"duplicates"`
	Foreign      int `json:"foreign"`
	RcvbufErrors int `json:"rcvbuf_errors"`
}

// udpRecvMain counts distinct sequence numbers of this run's datagrams
// until stdin closes (the sender is done), then 500 ms more.
func udpRecvMain(args []string) int {
	fs := flag.NewFlagSet("udp-recv", flag.ExitOnError)
	addr := fs.String("addr", "", "listen host:port")
	run := fs.Uint64("run", 0, "run id")
	n := fs.Int("n", 100000, "expected datagrams (sequence numbers 0..n-1)")
	_ = fs.Parse(args)
	la, err := net.ResolveUDPAddr("udp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "udp-recv:", err)
		return 1
	}
	c, err := net.ListenUDP("udp", la)
	if err != nil {
		fmt.Fprintln(os.Stderr, "udp-recv:", err)
		return 1
	}
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 16<<20)
		})
	}
	before := udpRcvbufErrors()
	seen := make([]bool, *n)
	var r recvResult
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		buf := make([]byte, 65536)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			if k < lossHdr || !bytes.Equal(buf[:8], lossMagic[:]) || binary.BigEndian.Uint64(buf[8:]) != *run {
				r.Foreign++
				continue
			}
			seq := binary.BigEndian.Uint64(buf[16:])
			if seq >= uint64(len(seen)) {
				r.Foreign++
				continue
			}
			if seen[seq] {
				r.Duplicates++
				continue
			}
			seen[seq] = true
			r.Received++
		}
	}()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	time.Sleep(500 * time.Millisecond)
	_ = c.Close()
	<-finished
	r.RcvbufErrors = udpRcvbufErrors() - before
	j, _ := json.Marshal(r)
	fmt.Println(string(j))
	return 0
}

// udpRcvbufErrors reads Udp RcvbufErrors of the current netns.
func udpRcvbufErrors() int {
	data, err := os.ReadFile("/proc/self/net/snmp")
	if err != nil {
		return 0
	}
	var hdr []string
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(l, "Udp: ") {
			continue
		}
		f := strings.Fields(l)
		if hdr == nil {
			hdr = f
			continue
		}
		for i, h := range hdr {
			if h == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.Atoi(f[i])
				return v
			}
		}
	}
	return 0
}

func (b *bench) printLoss() {
	b.printf("\n== Loss: %d UDP datagrams of %d B paced at %s, counted by sequence number in the receiving pod;\n", b.cfg.LossN, b.cfg.LossSize, shortRate(b.cfg.LossRate))
	b.printf("   z = (drops - n p) / sqrt(n p (1-p)); '!' marks |z| > 3 (or any difference where p is 0 or 1).\n")
	b.printf("%-8s %-12s %-7s %-11s %-11s %-14s %-8s %s\n", "dir", "distribution", "param", "expected", "measured", "dropped/sent", "z", "rcvbuf-err")
	for _, p := range b.report.Loss {
		param := strconv.FormatFloat(p.Param, 'f', -1, 64)
		if p.Dist == "uniform" {
			param += "%"
		}
		if p.Dist == "none" {
			param = "-"
		}
		if p.Error != "" {
			b.printf("%-8s %-12s %-7s ERROR: %s\n", p.Direction, p.Dist, param, p.Error)
			continue
		}
		z := "exact"
		if p.Z != nil {
			z = fmt.Sprintf("%+.2f", *p.Z)
		} else if p.Flag {
			z = "differs"
		}
		flag := ""
		if p.Flag {
			flag = " !"
		}
		b.printf("%-8s %-12s %-7s %-11.6f %-11.6f %-14s %-8s %d%s\n", p.Direction, p.Dist, param, p.Expected, p.Measured,
			fmt.Sprintf("%d/%d", p.Dropped, p.Sent), z, p.RcvbufErrors, flag)
	}
}
