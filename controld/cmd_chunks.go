package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

const chunksUsage = `usage: controld chunks gc|verify|status|rebuild [flags] ARGS

Works on the chunk store of a backup root kept in chunks storage
(<backup root>/.chunks); run it where the backup storage is mounted.
gc and verify run one at a time per store, by hand or on a node's
schedule (chunks: in nodebackupd.yaml); a second one fails at once.

  controld chunks gc [-grace 24h5m] [-json] ROOT
        remove the chunks no backup's index names any more (after its
        iteration was deleted) once nobody touched them for the grace
        period; a retain running meanwhile loses nothing. Reports the bytes
        freed and the bytes still waiting for the grace period.
  controld chunks verify [-part N -parts M] [-json] ROOT
        re-read the chunks (all, or part N of M: run it daily with the day
        of the week and -parts 7 to check all within a week), move damaged
        ones aside so that the next backup writes them again, and name
        every backup a damaged or missing chunk breaks. Exit status 1 if
        any.
  controld chunks status [-json] ROOT
        the last gc and verify of the store: when, on which host, what
        they found.
  controld chunks rebuild [-format qcow2|raw] INDEX IMAGE
        write the disk of one backup, as its index lists it, to IMAGE
        (sparse; checked against the index). INDEX is
        ROOT/<kind>/<pool>/<vm>/<leaf>/<disk>.index.<leaf>.

flags:`

func runChunks(args []string) error {
	if len(args) < 1 {
		return usagef("name gc, verify, status or rebuild\n%s", chunksUsage)
	}
	f := flag.NewFlagSet("chunks "+args[0], flag.ContinueOnError)
	f.Usage = func() { fmt.Fprintln(f.Output(), chunksUsage); f.PrintDefaults() }
	asJSON := f.Bool("json", false, "print JSON instead of text")
	grace := f.Duration("grace", format.DefaultGrace, "gc: keep unnamed chunks touched less than this long ago")
	part := f.Int("part", 0, "verify: the part to check (0 to parts-1)")
	parts := f.Int("parts", 1, "verify: into how many parts the store is split")
	imgFormat := f.String("format", "", "rebuild: qcow2 or raw (default: the backed-up disk's format)")
	if err := f.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	print := func(v any, text string) error {
		if *asJSON {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		_, err := fmt.Print(text)
		return err
	}
	switch {
	case args[0] == "gc" && f.NArg() == 1:
		root := filepath.Clean(f.Arg(0))
		job, err := format.RunGC(ctx, format.OpenChunkStore(root, nil), root, hostname(), *grace)
		if err != nil {
			return err
		}
		r := job.GC
		return print(r, fmt.Sprintf("%d indexes, %d chunks: removed %d (%d bytes), %d (%d bytes) wait for the grace period of %v, %d temporary files removed, %d named chunks missing\n",
			r.Indexes, r.Chunks, r.Removed, r.RemovedBytes, r.Pending, r.PendingBytes, *grace, r.TemporaryFiles, len(r.Missing)))
	case args[0] == "verify" && f.NArg() == 1:
		root := filepath.Clean(f.Arg(0))
		job, err := format.RunVerify(ctx, format.OpenChunkStore(root, nil), root, hostname(), *part, *parts)
		if err != nil {
			return err
		}
		r := job.Verify
		text := fmt.Sprintf("%d chunks checked, %d bad\n", r.Checked, len(r.Bad))
		for _, b := range r.Bad {
			text += fmt.Sprintf("%s: %s\n", b.ID, b.Problem)
			for _, bk := range b.Backups {
				text += "  breaks " + bk + "\n"
			}
		}
		if err := print(r, text); err != nil {
			return err
		}
		if len(r.Bad) > 0 {
			return fmt.Errorf("%d bad chunks", len(r.Bad))
		}
		return nil
	case args[0] == "status" && f.NArg() == 1:
		jobs, err := format.ReadStoreJobs(format.OpenChunkStore(filepath.Clean(f.Arg(0)), nil))
		if err != nil {
			return err
		}
		text := ""
		for _, job := range []string{format.JobGC, format.JobVerify} {
			if j, ok := jobs[job]; ok {
				text += j.Summary() + "\n"
			} else {
				text += job + " never ran\n"
			}
		}
		return print(jobs, text)
	case args[0] == "rebuild" && f.NArg() == 2:
		ref, root, err := format.ParseIndexPath(f.Arg(0))
		if err != nil {
			return usageError{err}
		}
		x, err := format.ReadIndex(ref.Path)
		if err != nil {
			return err
		}
		if *imgFormat != "" {
			x.Format = *imgFormat
		}
		out, err := filepath.Abs(f.Arg(1))
		if err != nil {
			return usageError{err}
		}
		start := time.Now()
		if err := format.RebuildImage(ctx, nil, format.OpenChunkStore(root, nil), x, hostio.In(filepath.Dir(out)).MustJoin(filepath.Base(out)), 0o600); err != nil {
			return err
		}
		return print(map[string]any{"image": out, "format": x.Format, "size": x.Size},
			fmt.Sprintf("%s: %s of %d bytes, %d chunks, in %v\n", out, x.Format, x.Size, x.Stored(), time.Since(start).Round(time.Millisecond)))
	}
	return usagef("%v: want gc ROOT, verify ROOT, status ROOT or rebuild INDEX IMAGE\n%s", args, chunksUsage)
}

// hostname names this host in a store job's record.
func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}
