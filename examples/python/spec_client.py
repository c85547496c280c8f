# The Python example of the API documents ("Примеры использования"), runnable against a
# wagate server. Lines that differ from the documents say so in a comment starting with
# "Changed:" or "Added:"; everything else is the documents' code.
#
#   WAGATE_API_KEY=wag_… WAGATE_BASE_URL=http://localhost:3000/api python3 spec_client.py
#
# Environment: WAGATE_API_KEY (required), WAGATE_BASE_URL (default
# http://localhost:3000/api), WAGATE_EXAMPLE_WEBHOOK_URL (optional), WAGATE_EXAMPLE_IMAGE_URL
# (the image to send), WAGATE_EXAMPLE_SCAN_TIMEOUT_S (default 120),
# WAGATE_EXAMPLE_MONITOR_PASSES (default 1). Exits non-zero on any failure.
import os  # Added: configuration from the environment
import sys  # Added: a non-zero exit on failure
import requests
import qrcode
import time

# Changed: no `from io import BytesIO` / `from PIL import Image`: the QR code is printed in
# the terminal instead of opened in an image viewer.

# Конфигурация API
# Changed: the key and the URL come from the environment.
api_key = os.environ.get("WAGATE_API_KEY") or sys.exit("Set WAGATE_API_KEY (your user's apiKey)")
base_url = os.environ.get("WAGATE_BASE_URL", "http://localhost:3000/api").rstrip("/")

# Заголовки для аутентификации
headers = {
    "x-api-key": api_key,
    "Content-Type": "application/json"
}

# Создание нового инстанса
def create_instance(name, description, webhook_url=None):
    instance_data = {
        "name": name,
        "description": description
    }
    
    if webhook_url:
        instance_data["webhookUrl"] = webhook_url
        instance_data["webhookEnabled"] = True
        instance_data["notifyReceived"] = True
        instance_data["notifySent"] = True
    
    response = requests.post(
        f"{base_url}/instances", 
        headers=headers, 
        json=instance_data
    )
    
    if response.status_code == 201:
        return response.json()
    else:
        raise Exception(f"Ошибка создания инстанса: {response.text}")

# Получение и отображение QR-кода
def get_and_display_qr(instance_id):
    print("Получение QR-кода...")
    
    max_attempts = 10
    for attempt in range(max_attempts):
        response = requests.get(
            f"{base_url}/instances/{instance_id}/qr", 
            headers=headers
        )
        
        if response.status_code == 200 and "qrCode" in response.json():
            qr_data = response.json()["qrCode"]
            # Changed: printed in the terminal (qrcode's print_ascii) instead of
            # `qrcode.make(qr_data).show()`, which needs PIL and a desktop.
            qr = qrcode.QRCode(border=2)
            qr.add_data(qr_data)
            qr.print_ascii(invert=True)
            print("Отсканируйте QR-код в приложении WhatsApp")
            return True
        elif response.status_code == 202:
            print("QR-код еще генерируется, ожидание...")
            time.sleep(3)
        # Added: the server answers 409 when there is no QR code because the instance is
        # linked already (a fast scan); then there is nothing to show.
        elif response.status_code == 409 and check_status(instance_id).get("ready"):
            print("QR-код уже отсканирован")
            return True
        else:
            print(f"Попытка {attempt+1}/{max_attempts}: не удалось получить QR-код")
            time.sleep(2)
    
    return False

# Added: the status check of the Node.js example (checkStatus), used to wait for the scan.
def check_status(instance_id):
    response = requests.get(
        f"{base_url}/whatsapp/{instance_id}/status",
        headers=headers
    )

    if response.status_code == 200:
        return response.json()
    else:
        raise Exception(f"Ошибка проверки статуса: {response.text}")

# Added: replaces the documents' fixed 20 s "time to scan": polls the status until the
# instance is ready, for at most `timeout` seconds.
def wait_until_connected(instance_id, timeout):
    deadline = time.monotonic() + timeout
    while True:
        status = check_status(instance_id)
        if status.get("ready"):
            return status
        if time.monotonic() >= deadline:
            raise Exception(f"Инстанс не подключился за {timeout} с: {status}")
        time.sleep(0.5)

# Отправка сообщения
def send_message(instance_id, phone, message):
    response = requests.post(
        f"{base_url}/whatsapp/{instance_id}/send", 
        headers=headers, 
        json={"phone": phone, "message": message}
    )
    
    if response.status_code == 200:
        return response.json()
    else:
        raise Exception(f"Ошибка отправки сообщения: {response.text}")

# Отправка изображения
def send_image(instance_id, phone, image_url, caption=None):
    data = {
        "phone": phone,
        "url": image_url
    }
    
    if caption:
        data["caption"] = caption
    
    response = requests.post(
        f"{base_url}/whatsapp/{instance_id}/send-media", 
        headers=headers, 
        json=data
    )
    
    if response.status_code == 200:
        return response.json()
    else:
        raise Exception(f"Ошибка отправки изображения: {response.text}")

# Мониторинг входящих сообщений
# Changed: at most `max_passes` polls (None: forever, as in the documents), a handler that
# returns True ends the monitoring, and a failed poll raises instead of being ignored.
def monitor_messages(instance_id, callback, interval=5, max_passes=None):
    last_timestamp = None
    passes = 0
    
    try:
        while max_passes is None or passes < max_passes:
            passes += 1
            params = {"limit": 10}
            if last_timestamp:
                params["since"] = last_timestamp
            
            response = requests.get(
                f"{base_url}/instances/{instance_id}/events", 
                headers=headers,
                params=params
            )
            
            if response.status_code == 200:
                data = response.json()
                
                for event in data["events"]:
                    if event["type"] == "message_received":
                        if callback(event["data"]) is True:
                            return
                
                if data["events"]:
                    last_timestamp = data["latestTimestamp"]
            else:
                raise Exception(f"Ошибка мониторинга сообщений: {response.text}")
            
            time.sleep(interval)
    except KeyboardInterrupt:
        print("Мониторинг остановлен")

# Пример использования
if __name__ == "__main__":
    # Создание нового инстанса
    instance = create_instance(
        "Тестовый инстанс", 
        "Создан через Python SDK",
        # Changed: the webhook is optional, from the environment.
        os.environ.get("WAGATE_EXAMPLE_WEBHOOK_URL")
    )
    
    instance_id = instance["id"]
    print(f"Инстанс создан с ID: {instance_id}")
    
    # Получение и отображение QR-кода
    if get_and_display_qr(instance_id):
        print("Ожидание сканирования QR-кода...")
        # Changed: instead of `time.sleep(20)`, the status is polled until connected.
        status = wait_until_connected(
            instance_id, float(os.environ.get("WAGATE_EXAMPLE_SCAN_TIMEOUT_S", "120"))
        )
        print(f"Статус инстанса: {status['status']}")
        
        # Отправка тестового сообщения
        result = send_message(instance_id, "79001234567", "Тестовое сообщение из Python")
        print(f"Сообщение отправлено, ID: {result['id']}")

        # Added: the documents' send_image, with an image the server can fetch.
        image_url = os.environ.get("WAGATE_EXAMPLE_IMAGE_URL")
        if image_url:
            result = send_image(instance_id, "79001234567", image_url, "Тестовое изображение из Python")
            print(f"Изображение отправлено, ID: {result['id']}")
        else:
            print("WAGATE_EXAMPLE_IMAGE_URL не задан: изображение не отправлено")
        
        # Мониторинг входящих сообщений
        # Changed: no longer commented out; the event's data carries the sender as `from`
        # (and `remoteJid`) and the text as `body`. It stops at the first message, or after
        # WAGATE_EXAMPLE_MONITOR_PASSES polls a second apart.
        def message_handler(message):
            print(f"Новое сообщение от {message['from']}: {message['body']}")
            return True
        
        monitor_messages(
            instance_id,
            message_handler,
            interval=1,
            max_passes=int(os.environ.get("WAGATE_EXAMPLE_MONITOR_PASSES", "1")),
        )
        print("Мониторинг завершён")
    else:
        # Added: without a QR code the example cannot go on.
        sys.exit("Не удалось получить QR-код")
