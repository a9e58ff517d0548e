package testenv

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// FreeAddr is a loopback address with a port free at the time of asking, for
// a daemon's listen setting.
func FreeAddr() (string, error) {
	p, err := freePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(p), nil
}

// HTTPGet returns url's body once it answers 200 OK, asking again for about
// five seconds while the server is still coming up.
func HTTPGet(url string) (string, error) {
	var last error
	for i := 0; i < 50; i++ {
		resp, err := http.Get(url)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				return string(b), nil
			}
			err = fmt.Errorf("%s: %s", resp.Status, b)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("%s: %w", url, last)
}
