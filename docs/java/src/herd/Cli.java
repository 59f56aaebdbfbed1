package herd;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/** The command line (src/cli.rs; herd.py's parse_args), GNU getopt style. */
final class Cli {
    private Cli() {}

    static final String VERSION = "0.1.0";
    static final String LEGACY_URL = "https://maps.googleapis.com/maps/api/place/nearbysearch/json";
    static final String NEW_URL = "https://places.googleapis.com/v1/places:searchNearby";

    static final String HELP = """
            Usage: herd.sh [OPTIONS] NAME [PORT]

            Run server NAME of an application-server herd (the Java counterpart of
            proxy-herd: a thread per connection). PORT, when given, overrides its
            client port (its neighbours still dial the peer address in the herd file).

            Options:
                -c, --config FILE   herd file (default: the built-in default herd)
                -l, --log FILE      log file (default: logs/NAME.log)
                    --places-url URL
                                    Places endpoint (default: Google's, for the chosen API)
                    --places-api legacy|new
                                    which Places API the endpoint speaks (default: legacy)
                    --places-ca FILE
                                    extra trusted CA certificates (PEM), added to the
                                    JDK's default trust roots
                -h, --help          print this help and exit
                -V, --version       print the version and exit

            Not here (the Rust server has them): --state, --herd-secret-file,
            --peer-cert, --peer-key, --peer-ca, --max-positions, --http,
            --max-clients, --idle-timeout.

            Environment:
                PLACES_API_KEY      the Google Places API key (never logged)
                HERD_JAVA_OPTS      extra JVM options for herd.sh (e.g. -Xlog:gc)""";

    /** A bad command line or herd file: one line on stderr, exit status 2. */
    static final class UsageError extends Exception {
        private static final long serialVersionUID = 1L;

        UsageError(String message) {
            super(message);
        }
    }

    /** What the command line asks for. */
    record Options(String name, Integer port, Map<String, HerdFile.ServerSpec> herd, String log,
                   String placesUrl, String placesApi, String placesCa) {}

    /** Help or version instead of a server. */
    enum Action { RUN, HELP, VERSION }

    record Parsed(Action action, Options options) {}

    private static final List<String> LONGS_WITH_VALUE =
            List.of("config", "log", "places-url", "places-api", "places-ca");
    private static final List<String> LONGS_FLAG = List.of("help", "version");

    private static String longName(String given) throws UsageError {
        List<String> all = new ArrayList<>(LONGS_WITH_VALUE);
        all.addAll(LONGS_FLAG);
        if (all.contains(given)) {
            return given;
        }
        // getopt accepts any unique prefix of a long option.
        List<String> matches = all.stream().filter(o -> o.startsWith(given)).toList();
        if (matches.isEmpty()) {
            throw new UsageError("option --" + given + " not recognized (see --help)");
        }
        if (matches.size() > 1) {
            throw new UsageError("option --" + given + " not a unique prefix (see --help)");
        }
        return matches.get(0);
    }

    private static void put(Map<String, String> opts, String key, String value) throws UsageError {
        if (opts.containsKey(key)) { // getopts' rule: an option given twice is an error
            throw new UsageError("option " + key + " given more than once (see --help)");
        }
        if (value != null && value.isEmpty()
                && List.of("config", "log", "places-url", "places-ca").contains(key)) {
            throw new UsageError("--" + key + ": empty value");
        }
        opts.put(key, value);
    }

    static Parsed parse(String[] argv) throws UsageError {
        Map<String, String> opts = new HashMap<>();
        List<String> free = new ArrayList<>();
        for (int i = 0; i < argv.length; i++) {
            String arg = argv[i];
            if (arg.equals("--")) {
                free.addAll(List.of(argv).subList(i + 1, argv.length));
                break;
            }
            if (arg.startsWith("--")) {
                int eq = arg.indexOf('=');
                String name = longName(eq < 0 ? arg.substring(2) : arg.substring(2, eq));
                String value = eq < 0 ? null : arg.substring(eq + 1);
                if (LONGS_WITH_VALUE.contains(name)) {
                    if (value == null) {
                        if (i + 1 >= argv.length) {
                            throw new UsageError("option --" + name + " requires argument (see --help)");
                        }
                        value = argv[++i];
                    }
                } else if (value != null) {
                    throw new UsageError("option --" + name + " must not have an argument (see --help)");
                }
                put(opts, name, value);
            } else if (arg.startsWith("-") && arg.length() > 1) {
                for (int j = 1; j < arg.length(); j++) {
                    char c = arg.charAt(j);
                    if (c == 'h' || c == 'V') {
                        put(opts, c == 'h' ? "help" : "version", null);
                    } else if (c == 'c' || c == 'l') {
                        String value = arg.substring(j + 1);
                        if (value.isEmpty()) {
                            if (i + 1 >= argv.length) {
                                throw new UsageError("option -" + c + " requires argument (see --help)");
                            }
                            value = argv[++i];
                        }
                        put(opts, c == 'c' ? "config" : "log", value);
                        break;
                    } else {
                        throw new UsageError("option -" + c + " not recognized (see --help)");
                    }
                }
            } else {
                free.add(arg); // GNU style: operands and options may mix
            }
        }
        if (opts.containsKey("help")) {
            return new Parsed(Action.HELP, null);
        }
        if (opts.containsKey("version")) {
            return new Parsed(Action.VERSION, null);
        }
        String api = opts.getOrDefault("places-api", "legacy");
        if (!api.equals("legacy") && !api.equals("new")) {
            throw new UsageError("--places-api: expected 'legacy' or 'new', got " + HerdFile.q(api));
        }
        String url = opts.getOrDefault("places-url", api.equals("legacy") ? LEGACY_URL : NEW_URL);
        if (!url.startsWith("https://") && !url.startsWith("http://")) {
            throw new UsageError("--places-url: expected an https:// or http:// URL, got " + HerdFile.q(url));
        }
        if (free.isEmpty()) {
            throw new UsageError("missing server NAME (see --help)");
        }
        if (free.size() > 2) {
            throw new UsageError("too many arguments: unexpected " + HerdFile.q(free.get(2)) + " after NAME and PORT");
        }
        String name = free.get(0);
        Integer port = null;
        if (free.size() == 2) {
            String p = free.get(1);
            String digits = Protocol.stripLeading(p, '0');
            if (p.isEmpty() || !Protocol.allDigits(p) || digits.length() > 5 || digits.isEmpty()
                    || Integer.parseInt(digits) > 65535) {
                throw new UsageError("bad PORT " + HerdFile.q(p) + ": expected a number from 1 to 65535");
            }
            port = Integer.parseInt(digits);
        }
        String config = opts.get("config");
        Map<String, HerdFile.ServerSpec> herd = config != null ? HerdFile.load(config)
                : HerdFile.parse(HerdFile.DEFAULT_HERD_TEXT, "<built-in>");
        if (!herd.containsKey(name)) {
            String source = config != null ? "the herd file " + config : "the default herd";
            throw new UsageError("unknown server " + HerdFile.q(name) + ": " + source + " has "
                    + String.join(", ", herd.keySet()));
        }
        String log = opts.get("log");
        if (log == null) {
            log = Path.of("logs", name + ".log").toString();
        }
        return new Parsed(Action.RUN, new Options(name, port, herd, log, url, api, opts.get("places-ca")));
    }
}
