// Command refproxy is the reference the webhook benchmark compares trustflow
// against: a net/http server that answers each POST with the JSON of one GET
// to the upstream over a pooled mutual-TLS client. It prints its address on
// stdout once it listens.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := flag.String("upstream", "", "URL to GET for each POST")
	caFile := flag.String("ca", "", "CA certificate (PEM) of the upstream")
	certFile := flag.String("cert", "", "client certificate (PEM)")
	keyFile := flag.String("key", "", "client key (PEM)")
	flag.Parse()

	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("refproxy: client identity: %v", err)
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		log.Fatalf("refproxy: CA: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		log.Fatalf("refproxy: CA: no certificate in %s", *caFile)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, Certificates: []tls.Certificate{cert}},
		MaxIdleConnsPerHost: 64,
	}
	client := &http.Client{Transport: tr}

	http.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		resp, err := client.Get(*upstream)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("refproxy: listen: %v", err)
	}
	fmt.Printf("refproxy listening http://%s\n", ln.Addr())
	log.Fatal(http.Serve(ln, nil))
}
