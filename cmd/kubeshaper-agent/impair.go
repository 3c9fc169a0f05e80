package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
)

// impairOptions are the agent's settings for custom programs and the
// duplicate rule (kubeshaper.io/program, kubeshaper.io/duplicate).
type impairOptions struct {
	programDir    string
	duplicateMark string
}

func addImpairFlags(fs *flag.FlagSet, o *impairOptions) {
	fs.StringVar(&o.programDir, "program-dir", "", "directory of the admin's custom programs, <name>.o each (a ConfigMap mount); kubeshaper.io/program names one of them. Empty: custom programs are refused with an Event")
	fs.StringVar(&o.duplicateMark, "duplicate-mark", fmt.Sprintf("%#x", datapath.DefaultDuplicateMark), "the skb->mark bit that tags a duplicate's clone at a host veth's tc ingress until kubeshaper's program sees it again and clears it (pods' packets arrive there with mark 0)")
}

// apply checks the options and gives the datapath its settings.
func (o impairOptions) apply(dp *datapath.Datapath) error {
	mark, err := strconv.ParseUint(o.duplicateMark, 0, 32)
	if err != nil {
		return fmt.Errorf("--duplicate-mark %q: want a single bit, e.g. 0x100000", o.duplicateMark)
	}
	if err := dp.SetDuplicateMark(uint32(mark)); err != nil {
		return fmt.Errorf("--duplicate-mark: %w", err)
	}
	if o.programDir != "" {
		if st, err := os.Stat(o.programDir); err != nil || !st.IsDir() {
			return fmt.Errorf("--program-dir %s is not a directory (%v)", o.programDir, err)
		}
	}
	return nil
}
