"""The inverters' Wi-Fi side: access-point addressing, dnsmasq, hostapd, nftables isolation,
upstream Wi-Fi, connected clients, and the ``solargw net run`` supervisor."""
