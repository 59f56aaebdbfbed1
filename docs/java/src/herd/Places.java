package herd;

import java.io.BufferedInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.KeyStoreException;
import java.security.cert.CertPathBuilderException;
import java.security.cert.CertPathValidatorException;
import java.security.cert.Certificate;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLHandshakeException;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509ExtendedTrustManager;

/**
 * HTTPS to Places (src/places/client.rs; herd.py's PlacesClient). Each
 * WHATSAT is a task on a pool of at most {@link #WORKERS} threads that do
 * plain blocking I/O on an {@link SSLSocket}: the request, then the
 * response. Connections are kept alive in a pool of idle ones, so most
 * requests skip the TCP and TLS handshakes. Hand-written HTTP rather than
 * java.net.http.HttpClient because the log must say when a connection is
 * opened, handshaken, reused or retried, which HttpClient hides.
 */
final class Places {
    static final int WORKERS = 32; // at most this many requests (and connections) at once
    static final int POOL = 16; // idle keep-alive connections kept...
    static final long IDLE_FOR_NS = 20L * Protocol.NS; // ...for at most this long
    static final long TIMEOUT_MS = 10_000;

    static final String FIELD_MASK = "places.id,places.displayName,places.location,places.types,"
            + "places.businessStatus,places.rating,places.userRatingCount,"
            + "places.shortFormattedAddress,places.formattedAddress";

    private final String api;
    private final Http.Endpoint endpoint;
    private final String key;
    private final List<X509Certificate> extraCas;
    private final Log log;
    private final Server server;
    private final AtomicLong requests = new AtomicLong();
    private final ExecutorService workers;
    private final ArrayDeque<Conn> idle = new ArrayDeque<>(); // guarded by itself; newest last
    private SSLContext tls; // built on first use: loading the trust roots takes a while

    /** One kept-alive TLS connection. */
    private record Conn(long id, SSLSocket socket, InputStream in, OutputStream out, long idleSince) {
        Conn idleNow() {
            return new Conn(id, socket, in, out, System.nanoTime());
        }

        void close() {
            try {
                socket.close();
            } catch (IOException e) {
                // closing anyway
            }
        }
    }

    /** Why a request failed, in the Rust client's words; {@code answered}: bytes of an answer had come. */
    static final class Failure extends Exception {
        private static final long serialVersionUID = 1L;

        final boolean answered;

        Failure(String message, boolean answered) {
            super(message);
            this.answered = answered;
        }
    }

    Places(String api, Http.Endpoint endpoint, String key, List<X509Certificate> extraCas, Log log, Server server) {
        this.api = api;
        this.endpoint = endpoint;
        this.key = key == null ? "" : key;
        this.extraCas = extraCas;
        this.log = log;
        this.server = server;
        ThreadPoolExecutor pool = new ThreadPoolExecutor(WORKERS, WORKERS, 30, TimeUnit.SECONDS,
                new LinkedBlockingQueue<>(), Server.threads("places", 0));
        pool.allowCoreThreadTimeOut(true); // no idle threads when nobody asks WHATSAT
        this.workers = pool;
    }

    /** The PEM certificates of --places-ca, read at start so that a bad file is a usage error. */
    static List<X509Certificate> readCas(String path) throws Cli.UsageError {
        try (InputStream in = Files.newInputStream(Path.of(path))) {
            Collection<? extends Certificate> certs = CertificateFactory.getInstance("X.509").generateCertificates(in);
            List<X509Certificate> out = new ArrayList<>();
            for (Certificate c : certs) {
                out.add((X509Certificate) c);
            }
            if (out.isEmpty()) {
                throw new Cli.UsageError("--places-ca: no certificate in " + path);
            }
            return out;
        } catch (IOException e) {
            throw new Cli.UsageError("--places-ca: cannot read " + path);
        } catch (CertificateException e) {
            throw new Cli.UsageError("--places-ca: bad certificate in " + path + ": " + e.getMessage());
        }
    }

    long nextRequest() {
        return requests.incrementAndGet();
    }

    /** Starts a request for {@code client}; its answer comes back through ClientConn.placesAnswered. */
    void start(ClientConn client, long request, String atLine, Protocol.Coords coords, String radius, int bound) {
        workers.execute(() -> fetch(client, request, atLine, coords, radius, bound));
    }

    private synchronized SSLContext context() throws GeneralSecurityException, IOException {
        if (tls == null) {
            X509ExtendedTrustManager extra = null;
            if (!extraCas.isEmpty()) {
                KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType());
                ks.load(null, null);
                for (int i = 0; i < extraCas.size(); i++) {
                    ks.setCertificateEntry("places-ca-" + i, extraCas.get(i));
                }
                extra = trustManager(ks);
            }
            SSLContext ctx = SSLContext.getInstance("TLS");
            ctx.init(null, new TrustManager[] {new EitherTrust(extra)}, null);
            tls = ctx;
        }
        return tls;
    }

    /** The PKIX trust manager of a key store (null: the JDK's default trust roots). */
    private static X509ExtendedTrustManager trustManager(KeyStore ks) throws GeneralSecurityException {
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ks);
        for (TrustManager tm : tmf.getTrustManagers()) {
            if (tm instanceof X509ExtendedTrustManager x) {
                return x;
            }
        }
        throw new KeyStoreException("no X.509 trust manager");
    }

    /**
     * Trusts a server that the --places-ca certificates or the JDK's default
     * roots vouch for (each check includes the host name). The default roots
     * are loaded only when a chain needs them: with --places-ca pointing at
     * the offline service's CA they never are, which spares a cold JVM's
     * first handshake the parsing of some 150 certificates.
     */
    private static final class EitherTrust extends X509ExtendedTrustManager {
        private final X509ExtendedTrustManager extra; // null without --places-ca
        private X509ExtendedTrustManager defaults; // guarded by this, loaded on first need

        EitherTrust(X509ExtendedTrustManager extra) {
            this.extra = extra;
        }

        private synchronized X509ExtendedTrustManager defaults() throws CertificateException {
            if (defaults == null) {
                try {
                    defaults = trustManager(null);
                } catch (GeneralSecurityException e) {
                    throw new CertificateException("cannot load the default trust roots: " + e.getMessage(), e);
                }
            }
            return defaults;
        }

        private interface Check {
            void run(X509ExtendedTrustManager tm) throws CertificateException;
        }

        private void either(Check check) throws CertificateException {
            CertificateException first = null;
            if (extra != null) {
                try {
                    check.run(extra);
                    return;
                } catch (CertificateException e) {
                    first = e;
                }
            }
            try {
                check.run(defaults());
            } catch (CertificateException e) {
                if (first != null) {
                    e.addSuppressed(first);
                }
                throw e;
            }
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, Socket socket)
                throws CertificateException {
            either(tm -> tm.checkServerTrusted(chain, authType, socket));
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, SSLEngine engine)
                throws CertificateException {
            either(tm -> tm.checkServerTrusted(chain, authType, engine));
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) throws CertificateException {
            either(tm -> tm.checkServerTrusted(chain, authType));
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, Socket socket)
                throws CertificateException {
            throw new CertificateException("this side is a client only");
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, SSLEngine engine)
                throws CertificateException {
            throw new CertificateException("this side is a client only");
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) throws CertificateException {
            throw new CertificateException("this side is a client only");
        }

        @Override
        public X509Certificate[] getAcceptedIssuers() {
            List<X509Certificate> all = new ArrayList<>();
            if (extra != null) {
                all.addAll(List.of(extra.getAcceptedIssuers()));
            }
            try {
                all.addAll(List.of(defaults().getAcceptedIssuers()));
            } catch (CertificateException e) {
                // only the extra ones, then
            }
            return all.toArray(new X509Certificate[0]);
        }
    }

    /** The request's bytes, and how the log shows it (never the key): http.rs. */
    private record Built(byte[] bytes, String shown) {}

    private Built build(Protocol.Coords coords, String radius, int bound) {
        Http.Endpoint ep = endpoint;
        String head = "Host: " + ep.authority + "\r\nUser-Agent: proxy-herd/" + Cli.VERSION
                + "\r\nAccept: application/json\r\nConnection: keep-alive\r\n";
        if (api.equals("legacy")) {
            String target = ep.legacyTarget(coords.lat(), coords.lon(), radius, Http.percentEncode(key));
            String shown = "GET https://" + ep.authority
                    + Http.redactKeys(ep.legacyTarget(coords.lat(), coords.lon(), radius, "***"));
            return new Built(("GET " + target + " HTTP/1.1\r\n" + head + "\r\n").getBytes(StandardCharsets.UTF_8),
                    shown);
        }
        String body = "{\"maxResultCount\":" + bound + ",\"locationRestriction\":{\"circle\":{\"center\":"
                + "{\"latitude\":" + Http.jsonNumber(coords.lat()) + ",\"longitude\":" + Http.jsonNumber(coords.lon())
                + "},\"radius\":" + Http.jsonNumber(radius) + "}}}";
        StringBuilder k = new StringBuilder();
        for (char c : key.toCharArray()) {
            if (c >= '!' && c <= '~') {
                k.append(c);
            }
        }
        byte[] bodyBytes = body.getBytes(StandardCharsets.UTF_8);
        String request = "POST " + ep.newTarget() + " HTTP/1.1\r\n" + head + "Content-Type: application/json\r\n"
                + "X-Goog-Api-Key: " + k + "\r\nX-Goog-FieldMask: " + FIELD_MASK + "\r\n"
                + "Content-Length: " + bodyBytes.length + "\r\n\r\n" + body;
        String shown = "POST https://" + ep.authority + Http.redactKeys(ep.newTarget()) + " " + body;
        return new Built(request.getBytes(StandardCharsets.UTF_8), shown);
    }

    /** One WHATSAT's Places part, on a worker thread: ask, render, hand the reply to the client. */
    private void fetch(ClientConn client, long request, String atLine, Protocol.Coords coords, String radius,
                       int bound) {
        Built built = build(coords, radius, bound);
        log.event("places#" + request + " request " + built.shown() + " for client#" + client.id);
        long start = System.nanoTime();
        long deadline = start + TIMEOUT_MS * 1_000_000L;
        PlacesReply.Rendered rendered;
        int status = 0;
        try {
            Http.Response response = exchange(request, built.bytes(), deadline);
            status = response.status();
            rendered = PlacesReply.render(api, response.status(), response.body(), bound);
        } catch (Failure | RuntimeException f) { // a bug still answers the client, with the error JSON
            String why = f instanceof Failure ? f.getMessage() : "internal error: " + f;
            String json = PlacesReply.errorJson("Places request failed: " + why, "UNKNOWN_ERROR");
            rendered = PlacesReply.Rendered.failed(json, why);
        }
        String ms = String.format(Locale.ROOT, "%.3f", (System.nanoTime() - start) / 1e6);
        if (rendered.ok()) {
            log.event("places#" + request + " answered: HTTP " + status + ", " + rendered.results()
                    + " results, in " + ms + " ms");
        } else {
            log.event("places#" + request + " failed: " + rendered.why() + " after " + ms + " ms");
        }
        byte[] json = rendered.json().getBytes(StandardCharsets.UTF_8);
        byte[] at = atLine.getBytes(StandardCharsets.ISO_8859_1);
        byte[] reply = new byte[at.length + 1 + json.length];
        System.arraycopy(at, 0, reply, 0, at.length);
        reply[at.length] = '\n';
        System.arraycopy(json, 0, reply, at.length + 1, json.length);
        if (!client.placesAnswered(request, reply, atLine)) {
            log.event("places#" + request + " answer dropped: its client has gone");
        }
    }

    private Conn takeIdle() {
        synchronized (idle) {
            while (!idle.isEmpty()) {
                Conn c = idle.pollLast();
                if (System.nanoTime() - c.idleSince() < IDLE_FOR_NS) {
                    return c;
                }
                c.close(); // idle too long
            }
            return null;
        }
    }

    private void putIdle(Conn c) {
        synchronized (idle) {
            if (idle.size() < POOL) {
                idle.addLast(c.idleNow());
                return;
            }
        }
        c.close(); // the idle pool is full
    }

    /**
     * One request on an idle pooled connection, or on a new one. A pooled
     * connection that Places had closed meanwhile (nothing came back) gets one
     * retry on a fresh connection.
     */
    private Http.Response exchange(long request, byte[] data, long deadline) throws Failure {
        Conn c = takeIdle();
        if (c != null) {
            log.event("places conn#" + c.id() + " reused for places#" + request);
            try {
                return send(c, data, deadline);
            } catch (Failure f) {
                if (f.answered || System.nanoTime() >= deadline) {
                    throw f;
                }
                log.event("places#" + request + " retried on a fresh connection: " + f.getMessage());
            }
        }
        return send(open(request, deadline), data, deadline);
    }

    private static int remainingMs(long deadline) throws SocketTimeoutException {
        long ms = (deadline - System.nanoTime()) / 1_000_000L;
        if (ms <= 0) {
            throw new SocketTimeoutException("deadline");
        }
        return (int) ms;
    }

    private Conn open(long request, long deadline) throws Failure {
        long id = server.nextConnId();
        log.event("places conn#" + id + " connecting for places#" + request);
        Socket tcp = new Socket();
        try {
            tcp.setTcpNoDelay(true);
            tcp.connect(new InetSocketAddress(endpoint.host, endpoint.port), remainingMs(deadline));
        } catch (SocketTimeoutException e) {
            closeQuietly(tcp);
            throw new Failure("no answer in " + TIMEOUT_MS / 1000 + " s", false);
        } catch (IOException | IllegalArgumentException | SecurityException e) {
            closeQuietly(tcp);
            throw new Failure("connect failed: " + message(e), false);
        }
        SSLSocket tlsSocket;
        try {
            tlsSocket = (SSLSocket) context().getSocketFactory().createSocket(tcp, endpoint.host, endpoint.port, true);
            SSLParameters params = tlsSocket.getSSLParameters();
            params.setEndpointIdentificationAlgorithm("HTTPS"); // check the certificate names the host
            tlsSocket.setSSLParameters(params);
            tlsSocket.setSoTimeout(remainingMs(deadline));
            tlsSocket.startHandshake();
        } catch (SocketTimeoutException e) {
            closeQuietly(tcp);
            throw new Failure("no answer in " + TIMEOUT_MS / 1000 + " s", false);
        } catch (SSLException e) {
            closeQuietly(tcp);
            throw new Failure("TLS: " + tlsMessage(e), false);
        } catch (IOException | GeneralSecurityException e) {
            closeQuietly(tcp);
            throw new Failure("TLS: " + message(e), false);
        }
        log.event("places conn#" + id + " TLS handshake done (" + tlsSocket.getSession().getProtocol() + ")");
        try {
            return new Conn(id, tlsSocket, tlsSocket.getInputStream(), tlsSocket.getOutputStream(), System.nanoTime());
        } catch (IOException e) {
            closeQuietly(tlsSocket);
            throw new Failure("TLS: " + message(e), false);
        }
    }

    private Http.Response send(Conn c, byte[] data, long deadline) throws Failure {
        // Each read from the socket waits at most what is left of the request's time.
        Http.CountingInput counted = new Http.CountingInput(new DeadlineInput(c.in(), c.socket(), deadline));
        BufferedInputStream in = new BufferedInputStream(counted, 1 << 16);
        boolean keep = false;
        try {
            c.out().write(data);
            c.out().flush();
            Http.Response response = Http.readResponse(in);
            // Pool only a connection that ended cleanly with nothing extra read.
            keep = response.keepAlive() && in.available() == 0;
            return response;
        } catch (SocketTimeoutException e) {
            throw new Failure("no answer in " + TIMEOUT_MS / 1000 + " s", true);
        } catch (SSLException e) {
            throw new Failure("TLS: " + tlsMessage(e), counted.count > 0);
        } catch (IOException e) {
            throw new Failure("HTTP: " + message(e), counted.count > 0);
        } finally {
            if (keep) {
                putIdle(c);
            } else {
                c.close();
            }
        }
    }

    /** Sets the socket's read timeout to what is left before each read. */
    private static final class DeadlineInput extends InputStream {
        private final InputStream in;
        private final Socket socket;
        private final long deadline;

        DeadlineInput(InputStream in, Socket socket, long deadline) {
            this.in = in;
            this.socket = socket;
            this.deadline = deadline;
        }

        @Override
        public int read() throws IOException {
            socket.setSoTimeout(remainingMs(deadline));
            return in.read();
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            socket.setSoTimeout(remainingMs(deadline));
            return in.read(b, off, len);
        }
    }

    private static String message(Throwable e) {
        String m = e.getMessage();
        return m == null || m.isEmpty() ? e.getClass().getSimpleName() : m;
    }

    /** rustls says "invalid peer certificate"; the JDK's PKIX words do not say "certificate". */
    private static String tlsMessage(SSLException e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof CertificateException || t instanceof CertPathBuilderException
                    || t instanceof CertPathValidatorException) {
                return "invalid peer certificate: " + message(e);
            }
        }
        if (e instanceof SSLHandshakeException) {
            return "handshake failed: " + message(e);
        }
        return message(e);
    }

    private static void closeQuietly(Socket s) {
        try {
            s.close();
        } catch (IOException e) {
            // closing anyway
        }
    }
}
