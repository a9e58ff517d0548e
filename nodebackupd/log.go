package main

import (
	"bytes"
	"io"

	"github.com/sirupsen/logrus"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// setupLog applies the configured level and format (text or json).
func setupLog(log *logrus.Logger, level, format string) error {
	if level != "" {
		l, err := logrus.ParseLevel(level)
		if err != nil {
			return err
		}
		log.SetLevel(l)
	}
	if format == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	}
	return nil
}
