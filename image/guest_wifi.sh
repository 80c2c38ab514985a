#!/bin/sh
# Runs inside the booted image (sent over SSH by image/boottest.py), as root.
# Two mac80211_hwsim radios: wlan0 stays with the appliance (hostapd starts by
# itself when wlan0 appears, solargw-net gives it its address and dnsmasq);
# the other radio moves into the network namespace "inverter", where
# wpa_supplicant joins with the configured passphrase, udhcpc gets a lease,
# www.nepviewer.net must resolve to the appliance, and a simulated NEP
# inverter posts a report. Then a wrong passphrase must be refused.
# Needs SSID and PASSPHRASE in the environment. Prints "RESULT {json}" last.
set -u
NS=inverter
RUN=/run/boottest
mkdir -p "$RUN" /etc/netns/$NS
: > /etc/netns/$NS/resolv.conf
ok_assoc=false ok_lease=false ok_dns=false ok_post=false ok_refused=false
lease_ip="" dns_answer="" serial="" detail=""

wait_for() {  # wait_for SECONDS COMMAND...
    n=$1; shift
    while [ "$n" -gt 0 ]; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1; n=$((n - 1))
    done
    return 1
}

result() {
    printf 'RESULT {"associated": %s, "lease": %s, "lease_ip": "%s", "dns": %s, "dns_answer": "%s", ' \
        "$ok_assoc" "$ok_lease" "$lease_ip" "$ok_dns" "$dns_answer"
    printf '"posted": %s, "serial": "%s", "wrong_passphrase_refused": %s, "detail": "%s"}\n' \
        "$ok_post" "$serial" "$ok_refused" "$detail"
}

modprobe mac80211_hwsim radios=2 || { detail="modprobe failed"; result; exit 1; }
wait_for 30 test -e /sys/class/net/wlan0/phy80211 -a -e /sys/class/net/wlan1/phy80211 \
    || { detail="no wlan0 and wlan1"; result; exit 1; }
links() { printf 'host: %s; %s: %s' "$(ip -br link | tr '"\n' "' ")" $NS "$(ip -n $NS -br link | tr '"\n' "' ")"; }
in_namespace() { ip -n $NS -br link | awk '$1 ~ /^wlan/ {sub(/@.*/, "", $1); print $1; exit}'; }
# The client's radio is whichever is not wlan0's; its interface is what arrives in the namespace.
# Its wlan1 first stays beside the appliance's for two of solargw-net's settings refreshes (5 s
# each): a station on another radio is not the upstream Wi-Fi's and must survive them (it once
# was deleted, as a USB Wi-Fi adapter's would have been).
sleep 12
test -e /sys/class/net/wlan1 || { detail="wlan1 was deleted while upstream Wi-Fi is off: $(links)"; result; exit 1; }
ap_phy=$(cat /sys/class/net/wlan0/phy80211/name)
phy=$(ls /sys/class/ieee80211 | grep -v -x -F "$ap_phy" | head -n 1)
ip netns add $NS
moved=$(iw phy "$phy" set netns name $NS 2>&1)
wait_for 10 sh -c "ip -n $NS -br link | grep -q '^wlan'"
CLIENT=$(in_namespace)
[ -n "$CLIENT" ] || { detail="$phy did not move into $NS: $moved; $(links)"; result; exit 1; }
ip -n $NS link set lo up

# hostapd is wanted by wlan0's device unit: it starts by itself.
if ! wait_for 120 systemctl is-active hostapd.service; then
    detail="hostapd not active: $(systemctl status --no-pager -n 20 hostapd.service 2>&1 | tr '"\n' "' " | cut -c1-600)"
    result; exit 1
fi
# solargw-net gives wlan0 its address once it appears; dnsmasq (bind-dynamic)
# then opens its DNS socket on that address: a client that joins earlier gets
# a lease (DHCP listens on every interface) but no answer to its DNS query.
if ! wait_for 60 sh -c "ip -4 -o addr show dev wlan0 | grep -q inet"; then
    detail="wlan0 got no address"; result; exit 1
fi
ap_addr=$(ip -4 -o addr show dev wlan0 | awk '{print $4}' | cut -d/ -f1)
if ! wait_for 60 sh -c "ss -H -l -n -u 'sport = :53' | grep -q -F ' $ap_addr:53 '"; then
    detail="dnsmasq not listening on $ap_addr:53: $(ss -H -l -n -u 'sport = :53' | tr '"\n' "' ")"
    result; exit 1
fi

join() {  # join PASSPHRASE LABEL
    cat > "$RUN/$2.conf" <<EOF
ctrl_interface=$RUN/ctrl-$2
network={
    ssid="$SSID"
    psk="$1"
    key_mgmt=WPA-PSK
}
EOF
    ip netns exec $NS wpa_supplicant -B -i $CLIENT -c "$RUN/$2.conf" -P "$RUN/$2.pid" -f "$RUN/$2.log"
}
state() {
    ip netns exec $NS wpa_cli -p "$RUN/ctrl-$1" status 2>/dev/null | sed -n 's/^wpa_state=//p'
}
stop_supplicant() {
    kill "$(cat "$RUN/$1.pid")" 2>/dev/null
    wait_for 10 sh -c "! kill -0 $(cat "$RUN/$1.pid") 2>/dev/null"
}

# udhcpc's own script hands DNS servers to resolvconf, which is resolvectl here (the appliance's
# systemd-resolved, outside the namespace): this one writes the namespace's resolv.conf itself.
UDHCPC_SCRIPT=/var/tmp/boottest-udhcpc.script  # /run is mounted noexec
cat > "$UDHCPC_SCRIPT" <<'SCRIPT'
#!/bin/sh
case "$1" in
bound|renew)
    ip -4 addr flush dev "$interface"
    ip -4 addr add "$ip/$mask" dev "$interface"
    [ -z "$router" ] || ip -4 route replace default via "${router%% *}" dev "$interface"
    : > /etc/resolv.conf
    for server in $dns; do echo "nameserver $server" >> /etc/resolv.conf; done ;;
deconfig)
    ip link set "$interface" up
    ip -4 addr flush dev "$interface" ;;
esac
SCRIPT
chmod 755 "$UDHCPC_SCRIPT"

join "$PASSPHRASE" good
if wait_for 60 sh -c "[ \"\$(ip netns exec $NS wpa_cli -p $RUN/ctrl-good status 2>/dev/null | sed -n 's/^wpa_state=//p')\" = COMPLETED ]"; then
    ok_assoc=true
    if ip netns exec $NS udhcpc -i $CLIENT -n -q -t 10 -T 3 -s "$UDHCPC_SCRIPT" >"$RUN/udhcpc.log" 2>&1; then
        lease_ip=$(ip -n $NS -4 -o addr show dev $CLIENT | awk '{print $4}' | cut -d/ -f1)
        [ -n "$lease_ip" ] && ok_lease=true
        # A lookup the moment the lease arrives may race dnsmasq's socket: retry for a while.
        lookup() { dns_answer=$(ip netns exec $NS getent ahostsv4 www.nepviewer.net | awk 'NR==1{print $1}'); }
        lookup
        n=20
        while [ "$dns_answer" != "$ap_addr" ] && [ $n -gt 0 ]; do sleep 1; n=$((n - 1)); lookup; done
        if [ -n "$dns_answer" ] && [ "$dns_answer" = "$ap_addr" ]; then
            ok_dns=true
        else
            detail="www.nepviewer.net -> '$dns_answer', resolv.conf: $(tr '"\n' "' " < /etc/netns/$NS/resolv.conf); DNS sockets: $(ss -H -l -n -u 'sport = :53' | tr '"\n' "' ")"
        fi
        if [ "$ok_dns" = true ]; then
            out=$(ip netns exec $NS /opt/solargw/venv/bin/solargw simulate nep \
                --url http://www.nepviewer.net/ --inverters 1 --rounds 1 --seed 4242 --start 12:00 2>&1)
            serial=$(printf '%s\n' "$out" | awk '/^inverter / {print $2; exit}')
            # Recorded: the appliance's own JSON lists the inverter.
            if wait_for 20 sh -c "python3 -c \"import json,urllib.request;d=json.load(urllib.request.urlopen('http://127.0.0.1/data.json'));print(json.dumps(d))\" | grep -q '$serial'"; then
                ok_post=true
            else
                detail="posted but not in /data.json: $(printf '%s' "$out" | tr '"\n' "' " | cut -c1-300)"
            fi
        fi
    else
        detail="no DHCP lease: $(tr '"\n' "' " < "$RUN/udhcpc.log" | cut -c1-300)"
    fi
else
    detail="no association: $(tail -n 15 "$RUN/good.log" | tr '"\n' "' " | cut -c1-600); $(links)"
fi
stop_supplicant good
ip -n $NS addr flush dev $CLIENT

join "wrong-passphrase-123" bad
sleep 20
st=$(state bad)
if [ "$st" != COMPLETED ] && grep -q -i -E "WRONG_KEY|4-Way Handshake failed|pre-shared key may be incorrect" "$RUN/bad.log"; then
    ok_refused=true
fi
stop_supplicant bad
result
