package herd;

import java.io.IOException;
import java.net.BindException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.StandardSocketOptions;
import java.net.UnknownHostException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.security.cert.X509Certificate;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;

/**
 * proxy-herd in Java, a thread per connection (src/bin/proxy-herd.rs):
 * parse the command line, check the ports are free, start one thread per
 * link, open the peer port and the client port, start one accept thread per
 * port, then wait for SIGINT or SIGTERM.
 */
public final class Main {
    private Main() {}

    /** The listen backlog asked for (the kernel caps it at net.core.somaxconn). */
    static final int BACKLOG = 4096;


    public static void main(String[] args) {
        Cli.Parsed parsed;
        try {
            parsed = Cli.parse(args);
        } catch (Cli.UsageError e) {
            System.err.println("herd.sh: " + e.getMessage());
            System.exit(2);
            return;
        }
        switch (parsed.action()) {
            case HELP -> System.out.println(Cli.HELP);
            case VERSION -> System.out.println("proxy-herd " + Cli.VERSION + " (java)");
            case RUN -> System.exit(serve(parsed.options()));
        }
    }

    private static InetAddress resolve(HerdFile.Addr a) throws UnknownHostException {
        return InetAddress.getByName(a.host());
    }

    static int serve(Cli.Options o) {
        HerdFile.ServerSpec me = o.herd().get(o.name());
        InetAddress clientHost;
        InetAddress peerHost;
        try {
            clientHost = resolve(me.client());
            peerHost = resolve(me.peer());
            for (String n : me.neighbours()) {
                resolve(o.herd().get(n).peer());
            }
        } catch (UnknownHostException e) {
            System.err.println("herd.sh: cannot resolve an address of the herd: " + e.getMessage());
            return 2;
        }
        Http.Endpoint endpoint;
        try {
            endpoint = new Http.Endpoint(o.placesUrl());
        } catch (IllegalArgumentException e) {
            System.err.println("herd.sh: --places-url: " + e.getMessage());
            return 2;
        }
        List<X509Certificate> cas = List.of();
        if (o.placesCa() != null) {
            try {
                cas = Places.readCas(o.placesCa());
            } catch (Cli.UsageError e) {
                System.err.println("herd.sh: " + e.getMessage());
                return 2;
            }
        }
        Log log;
        try {
            log = new Log(o.log());
        } catch (IOException e) {
            System.err.println("herd.sh: cannot open the log " + o.log() + ": " + e.getMessage());
            return 1;
        }
        Server server = new Server(o.name(), log);
        server.places = new Places(o.placesApi(), endpoint, System.getenv("PLACES_API_KEY"), cas, log, server);
        for (String n : me.neighbours()) {
            HerdFile.Addr peer = o.herd().get(n).peer();
            try {
                server.addLink(n, new InetSocketAddress(resolve(peer), peer.port()), peer.toString());
            } catch (UnknownHostException e) {
                System.err.println("herd.sh: cannot resolve an address of the herd: " + e.getMessage());
                return 2;
            }
        }

        // Before the ports open: a signal may come the moment they do.
        CompletableFuture<String> stop = new CompletableFuture<>();
        Signals.install(stop, log);

        // The order matters. A JVM takes a second or so under load to get
        // from opening its ports to its first HELLO; a neighbour backing off
        // from us that dialed an open peer port in that time would come in
        // through its timer, not through the quick rejoin. So: first check
        // that both ports are free (bound, not listening: nobody can connect
        // yet, and a port in use is found before anything is sent); then
        // greet the neighbours; then open the peer port, then the client
        // port, so that a client that can connect finds the peer port open.
        // A neighbour that dials back before our peer port opens retries
        // after a 100 ms backoff.
        int clientPort = o.port() != null ? o.port() : me.client().port();
        InetSocketAddress clientAddr = new InetSocketAddress(clientHost, clientPort);
        InetSocketAddress peerAddr = new InetSocketAddress(peerHost, me.peer().port());
        ServerSocket clients;
        ServerSocketChannel peers;
        InetSocketAddress where = clientAddr;
        try {
            probe(clientAddr);
            where = peerAddr;
            probe(peerAddr);
            for (Link link : server.links) {
                start("link-" + link.name, link);
            }
            for (Link link : server.links) {
                link.awaitFirstDial(3000);
            }
            peers = ServerSocketChannel.open();
            peers.setOption(StandardSocketOptions.SO_REUSEADDR, true);
            peers.bind(peerAddr, BACKLOG);
            where = clientAddr;
            clients = new ServerSocket();
            clients.setReuseAddress(true); // restart at once over old connections in TIME_WAIT
            clients.bind(clientAddr, BACKLOG);
        } catch (BindException e) {
            String m = String.valueOf(e.getMessage());
            String shown = Server.show(where.getAddress(), where.getPort());
            System.err.println(m.contains("in use") ? "herd.sh: address " + shown + " is already in use"
                    : "herd.sh: cannot listen on " + shown + ": " + m);
            return 1;
        } catch (IOException e) {
            System.err.println("herd.sh: cannot listen on " + Server.show(where.getAddress(), where.getPort())
                    + ": " + e.getMessage());
            return 1;
        } catch (InterruptedException e) {
            return 1;
        }
        try {
            log.event(server.name + " listening for clients on "
                    + Server.show(clients.getInetAddress(), clients.getLocalPort()) + " and for peers on "
                    + Server.show(peerHost, ((InetSocketAddress) peers.getLocalAddress()).getPort()));
        } catch (IOException e) {
            log.event(server.name + " listening");
        }

        start("accept-clients", () -> acceptClients(server, clients));
        start("accept-peers", () -> acceptPeers(server, peers));

        String why;
        try {
            why = stop.get();
        } catch (InterruptedException | ExecutionException e) {
            why = "an interrupt";
        }
        log.event(server.name + " stopping on " + why);
        log.close();
        return 0;
    }

    /** Binds a socket to addr without listening, and lets it go: is the port free? */
    private static void probe(InetSocketAddress addr) throws IOException {
        try (SocketChannel s = SocketChannel.open()) {
            s.setOption(StandardSocketOptions.SO_REUSEADDR, true); // as the listener will
            s.bind(addr);
        }
    }

    private static void start(String name, Runnable body) {
        Thread t = new Thread(body, name);
        t.setDaemon(true);
        t.start();
    }

    /** The client port's accept thread: a new thread for every connection. */
    private static void acceptClients(Server server, ServerSocket listener) {
        while (true) {
            Socket s;
            try {
                s = listener.accept();
            } catch (IOException e) {
                // Out of descriptors, most likely: wait for some to be freed rather than spin.
                server.log.event("accept failed: " + e.getMessage());
                pause();
                continue;
            }
            ClientConn conn = new ClientConn(server, s, server.nextConnId());
            try {
                s.setTcpNoDelay(true);
                Thread t = new Thread(null, conn, "client#" + conn.id, Server.SMALL_STACK);
                t.setDaemon(true);
                t.start();
            } catch (IOException | OutOfMemoryError e) {
                // OutOfMemoryError here means the OS would not give us a thread.
                server.log.event("client#" + conn.id + " refused: cannot start its thread: " + e.getMessage());
                try {
                    s.close();
                } catch (IOException ignored) {
                    // closed anyway
                }
                pause();
            }
        }
    }

    /** The peer port's accept thread. */
    private static void acceptPeers(Server server, ServerSocketChannel listener) {
        while (true) {
            SocketChannel ch;
            try {
                ch = listener.accept();
            } catch (IOException e) {
                server.log.event("accept failed: " + e.getMessage());
                pause();
                continue;
            }
            long id = server.nextConnId();
            try {
                Thread t = new Thread(new PeerIn(server, ch, id), "peer-in#" + id);
                t.setDaemon(true);
                t.start();
            } catch (IOException | OutOfMemoryError e) {
                server.log.event("peer-in #" + id + " refused: " + e.getMessage());
                try {
                    ch.close();
                } catch (IOException ignored) {
                    // closed anyway
                }
            }
        }
    }

    private static void pause() {
        try {
            Thread.sleep(100);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
